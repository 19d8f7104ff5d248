"""Fan-out: call a function inside a block on each database of the directory.

::

    from dynroute import each_database

    results = each_database(lambda name: Order.objects.filter(open=True).count())
    for name, result in results.items():
        print(name, result.value if result.ok else result.error)

``fn(name)`` runs in a thread of a pool of ``concurrency``, inside a block on that
database (reads and writes); the thread's connection is closed when ``fn`` returns,
so no more than ``concurrency`` connections are open at once. A database that fails
(down, refused, ``fn`` raised) gives its error as its result; the others go on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

from dynroute.exceptions import UsageError
from dynroute.fleet._fleet import servers
from dynroute.fleet._on import on_database, secrets_masked
from dynroute.fleet._pool import Outcome, Threads, schedule, tell_finished, tell_started
from dynroute.routing import in_database
from dynroute.tenants import load_directory

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from dynroute.tenants import Directory

__all__ = ["DatabaseResult", "aeach_database", "each_database"]

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class DatabaseResult(Generic[_R]):
    """What ``fn`` gave on one database: its value, or the error it ended with.

    Attributes:
        name: The database's name in the directory.
        value: What ``fn`` returned (``None`` if it failed).
        error: What was raised (``None`` if it succeeded): by ``fn``, or on entering
            the block (a database that is down raises
            :class:`~dynroute.exceptions.DatabaseConnectionError`, secrets masked).
        seconds: How long the database's work took, block included.
    """

    name: str
    value: _R | None
    error: BaseException | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether ``fn`` returned."""
        return self.error is None

    def unwrap(self) -> _R:
        """The value; or raise the error.

        Raises:
            BaseException: The database's error, as it was raised.
        """
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None only when fn returned None


def each_database(
    fn: Callable[[str], _R],
    names: Iterable[str] | None = None,
    *,
    concurrency: int = 8,
) -> dict[str, DatabaseResult[_R]]:
    """Call ``fn(name)`` inside a block on each database, ``concurrency`` at a time.

    Args:
        fn: Called with the database's name, inside ``in_database(<its target>,
            read=True, write=True)``, in a thread of the pool.
        names: Names in ``settings.DYNROUTE_DATABASES`` (by default all of them).
        concurrency: Threads, so databases (and connections) at once.

    Returns:
        Each database's result, by name, in the order of ``names``.

    Raises:
        UsageError: ``concurrency`` is below 1.
        UnknownDatabaseError: A name is not in the directory.
    """
    entries, order = _chosen(names, concurrency)

    def work(name: str) -> Outcome:
        return on_database(name, lambda _connection: fn(name), entries=entries)[1]

    found, refused = servers(entries, order)
    with Threads(work, concurrency) as threads:
        outcomes = schedule(
            [name for name in order if name in found],
            found,
            threads,
            parallel=concurrency,
            per_server=concurrency,
            started=_started,
            finished=_finished,
        )
    by_name = {outcome.name: outcome for outcome in (*outcomes, *refused)}
    return {name: _result(by_name[name]) for name in order}


async def aeach_database(
    fn: Callable[[str], Awaitable[_R]],
    names: Iterable[str] | None = None,
    *,
    concurrency: int = 8,
) -> dict[str, DatabaseResult[_R]]:
    """The async twin of :func:`each_database`: ``await fn(name)`` in an ``async with`` block.

    At most ``concurrency`` databases are worked on at once; each one's connection (in
    the async ORM's thread) is closed when ``fn`` returns.

    Raises:
        UsageError: ``concurrency`` is below 1.
        UnknownDatabaseError: A name is not in the directory.
    """
    entries, order = _chosen(names, concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> DatabaseResult[_R]:
        async with gate:
            started = time.monotonic()
            _started(name)
            target = None
            try:
                target = entries.target(name)
                async with in_database(target, read=True, write=True) as route:
                    try:
                        value = await fn(name)
                    finally:
                        await sync_to_async(_close)(route.alias)
            except Exception as error:  # noqa: BLE001 - one database's failure is its result
                message = secrets_masked(f"{type(error).__name__}: {error}", target)
                outcome = Outcome(name, "failed", error=message, seconds=_since(started))
                outcome.exception = error
            else:
                outcome = Outcome(name, "done", seconds=_since(started), result=value)
            _finished(outcome)
            return _result(outcome)

    results = await asyncio.gather(*(one(name) for name in order))
    return {result.name: result for result in results}


def _chosen(names: Iterable[str] | None, concurrency: int) -> tuple[Directory, list[str]]:
    if concurrency < 1:
        msg = f"concurrency must be 1 or more, got {concurrency!r}."
        raise UsageError(msg)
    entries = load_directory()  # afresh: tenants come and go
    return entries, entries.select(names)


def _result(outcome: Outcome) -> DatabaseResult[Any]:
    error = outcome.exception
    if outcome.status == "failed" and error is None:
        error = RuntimeError(outcome.error)
    value = None if error is not None else outcome.result
    return DatabaseResult(outcome.name, value, error, outcome.seconds)


def _started(name: str) -> None:
    tell_started(name, "each")


def _finished(outcome: Outcome) -> None:
    tell_finished(outcome, "each")


def _close(alias: str) -> None:
    """Close this thread's connection to ``alias`` (run in the async ORM's thread)."""
    connections[alias].close()


def _since(started: float) -> float:
    return time.monotonic() - started
