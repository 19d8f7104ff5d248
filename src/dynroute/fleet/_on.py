"""Work on one database of the directory, by name: the block, the connection, the errors.

Everything that works across databases goes through :func:`on_database`: it enters a
block on the name's target, gives the work that block's connection, closes the
connection when the work ends (a run over a thousand databases keeps none open), and
turns what the work raised into an :class:`Outcome` whose message has the target's
secrets masked.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar, cast

from django.conf import settings
from django.db import connections

from dynroute.core import DatabaseConfiguration
from dynroute.fleet._pool import Outcome
from dynroute.routing import in_database
from dynroute.runtime import scrub
from dynroute.tenants import Directory, current_directory

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from django.db.backends.base.base import BaseDatabaseWrapper

    from dynroute.core import DatabaseTarget

__all__ = ["on_database", "secrets_masked"]

_R = TypeVar("_R")


def on_database(
    name: str,
    work: Callable[[BaseDatabaseWrapper], _R],
    *,
    entries: Directory | None = None,
) -> tuple[_R | None, Outcome]:
    """Run ``work`` with the connection of a block on ``name``; never raise for it.

    Returns:
        What ``work`` returned (``None`` if it raised), and the outcome: ``"done"``,
        or ``"failed"`` with the error (a database that is down, a target refused).
    """
    started = time.monotonic()
    target: DatabaseTarget | None = None
    try:
        target = (entries or current_directory()).target(name)
        with in_database(target, read=True, write=True) as route:
            connection = connections[route.alias]
            try:
                result = work(connection)
            finally:
                connection.close()
    # SystemExit too: a command run on each database (dynroute run) may exit.
    except (Exception, SystemExit) as error:  # noqa: BLE001 - one database's failure is its outcome
        message = secrets_masked(f"{type(error).__name__}: {error}", target)
        outcome = Outcome(name, "failed", error=message[:1000], seconds=_since(started))
        outcome.exception = error
        return None, outcome
    return result, Outcome(name, "done", seconds=_since(started), result=result)


def secrets_masked(text: str, target: DatabaseTarget | None) -> str:
    """``text`` with ``target``'s password and secret options masked."""
    if target is None:
        return text
    if isinstance(target, DatabaseConfiguration):
        return scrub(text, target.settings)
    databases = cast("Mapping[str, Mapping[str, object]]", settings.DATABASES)
    return scrub(text, databases.get(target.alias, {}))


def _since(started: float) -> float:
    return time.monotonic() - started
