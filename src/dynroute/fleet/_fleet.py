"""Migrations across the directory: which databases are behind, and bringing them up.

:func:`check` reads every database's applied migrations (one query each, in threads)
and compares them with the graph, built once. :func:`migrate` checks, then applies
what the databases that are behind lack, in worker processes, each database under its
migration lock (a database another run brought up meanwhile is found up to date).
Outcomes come back in the order of the names; one database's failure never stops
the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.db import connections

from dynroute.core import DatabaseConfiguration
from dynroute.fleet import _migrations
from dynroute.fleet._on import on_database
from dynroute.fleet._pool import Outcome, Processes, Threads, failure, schedule
from dynroute.tenants import Directory, server_of

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["Bounds", "check", "migrate", "migrate_one", "run_each", "servers"]

#: Databases a worker process migrates before it is replaced by a fresh one.
DEFAULT_RECYCLE = 200


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much runs at once, and what to tell as it does."""

    parallel: int = 4
    per_server: int | None = None
    recycle: int = DEFAULT_RECYCLE
    stop: threading.Event | None = None
    started: Callable[[str], None] | None = None
    finished: Callable[[Outcome], None] | None = None


def servers(entries: Directory, names: Iterable[str]) -> tuple[dict[str, str], list[Outcome]]:
    """The server of each name, and the outcomes of names whose target is refused."""
    found: dict[str, str] = {}
    refused: list[Outcome] = []
    for name in names:
        try:
            found[name] = server_of(entries.target(name))
        except Exception as error:  # noqa: BLE001, PERF203 - that database's failure
            refused.append(failure(name, error))
    return found, refused


def check(entries: Directory, names: Iterable[str], bounds: Bounds) -> list[Outcome]:
    """Whether each database is ``"up to date"`` or ``"behind"`` (with what it lacks)."""
    graph = _migrations.graph()

    def read(name: str) -> Outcome:
        started = time.monotonic()
        done = _read_applied(entries, name)
        if done is not None:
            outcome = Outcome(name, "done", seconds=time.monotonic() - started)
        else:  # no table yet, or a failure: the thorough way, in a block
            done, outcome = on_database(name, _migrations.applied, entries=entries)
        if done is not None:
            pending = graph.pending(done)
            outcome.status = "behind" if pending else "up to date"
            outcome.migrations = tuple(f"{app}.{migration}" for app, migration in pending)
        return outcome

    return run_each(entries, names, Threads(read, bounds.parallel), bounds)


def _read_applied(entries: Directory, name: str) -> set[_migrations.Key] | None:
    """``name``'s applied migrations the quick way, or ``None`` if that failed."""
    try:
        target = entries.target(name)
        if isinstance(target, DatabaseConfiguration):
            return _migrations.read_applied(target.settings, target.alias)
        configured = cast("Mapping[str, Any]", connections.settings[target.alias])
        return _migrations.read_applied(configured, target.alias)
    except Exception:  # noqa: BLE001 - asked again the thorough way, which reports it
        return None


def migrate(entries: Directory, names: Iterable[str], bounds: Bounds) -> list[Outcome]:
    """Bring every database of ``names`` up to date; the outcome of each.

    The check runs first, in threads; only the databases behind go to the workers.

    Raises:
        ConfigurationError: Conflicting migrations (an app with two leaves): nothing runs.
    """
    _migrations.check_conflicts()
    # Each database is told started once (at its check) and finished once.
    checked = check(entries, names, _starting(bounds))
    outcomes = {outcome.name: outcome for outcome in checked}
    behind = [outcome.name for outcome in checked if outcome.status == "behind"]
    for outcome in checked:
        if outcome.status != "behind" and bounds.finished is not None:
            bounds.finished(outcome)
    if behind:
        workers = Processes(migrate_one, min(bounds.parallel, len(behind)), recycle=bounds.recycle)
        for outcome in run_each(entries, behind, workers, _finishing(bounds)):
            outcomes[outcome.name] = outcome
    return [outcomes[outcome.name] for outcome in checked]


def migrate_one(name: str, entries: Directory | None = None) -> Outcome:
    """Migrate ``name``'s database under its lock (in a worker process, or given ``entries``)."""

    def work(connection: BaseDatabaseWrapper) -> list[_migrations.Key]:
        with _migrations.locked(connection):
            return _migrations.migrate(connection, _migrations.applied(connection))

    done, outcome = on_database(name, work, entries=entries)
    outcome.exception = None  # the message travels; the exception may not pickle
    if done is not None:
        outcome.status = "migrated" if done else "up to date"
        outcome.migrations = tuple(f"{app}.{migration}" for app, migration in done)
    return outcome


def run_each(
    entries: Directory,
    names: Iterable[str],
    runner: Threads | Processes,
    bounds: Bounds,
) -> list[Outcome]:
    """Schedule ``runner`` over ``names`` within ``bounds``: refused targets fail first."""
    order = list(names)
    found, refused = servers(entries, order)
    for outcome in refused:
        if bounds.finished is not None:
            bounds.finished(outcome)
    with runner:
        ran = schedule(
            [name for name in order if name in found],
            found,
            runner,
            parallel=bounds.parallel,
            per_server=bounds.per_server,
            stop=bounds.stop,
            started=bounds.started,
            finished=bounds.finished,
        )
    by_name = {outcome.name: outcome for outcome in (*ran, *refused)}
    return [by_name[name] for name in order]


def _starting(bounds: Bounds) -> Bounds:
    """The same bounds, telling each start only (the check before migrating)."""
    return Bounds(
        bounds.parallel, bounds.per_server, bounds.recycle, bounds.stop, started=bounds.started
    )


def _finishing(bounds: Bounds) -> Bounds:
    """The same bounds, telling each end only (the migrations after the check)."""
    return Bounds(
        bounds.parallel, bounds.per_server, bounds.recycle, bounds.stop, finished=bounds.finished
    )
