"""Running work on many databases at once: bounded overall and per server, stoppable.

:func:`schedule` starts work on one database at a time as slots free up, never more
than ``parallel`` at once, nor more than ``per_server`` on one server when given. The
least busy server with work waiting starts next: a server never takes more than its
share of ``parallel`` while another has work waiting, and the last one left may use
every slot. A stop request (the first Ctrl-C) starts nothing more: what runs
finishes, and the rest is reported as not run.

Work runs in threads (:class:`Threads`: reading, fan-out) or in worker processes
(:class:`Processes`: migrating), started by ``forkserver`` from a clean process, each
setting Django up once and recycled after ``recycle`` databases so that its memory
stays flat. Only names travel to a worker; it reads the directory itself, so no
settings dict (and no password) leaves the process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import django

from dynroute import observe

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Mapping
    from concurrent.futures import Future
    from multiprocessing.pool import Pool

    from typing_extensions import Self

__all__ = ["Outcome", "Processes", "Threads", "schedule", "tell_finished", "tell_started"]

Status = Literal["migrated", "up to date", "behind", "done", "failed", "not run"]


@dataclass(slots=True)
class Outcome:
    """What happened on one database: its status, the migrations, the error, the time."""

    name: str
    status: Status
    #: migrations applied (``migrate``) or pending (``showmigrations``): ``app.name``
    migrations: tuple[str, ...] = ()
    #: the error, as ``Type: message``, with the target's secrets masked
    error: str = ""
    seconds: float = 0.0
    #: what the work returned (fan-out), or the output it printed (``run``)
    result: object = field(default=None, repr=False)
    #: what the work raised, in this process only (a worker sends ``error`` alone)
    exception: BaseException | None = field(default=None, repr=False)


class Runner(Protocol):
    """Starts work on one database, and reports its outcome to ``done`` when it ends."""

    def start(self, name: str, done: Callable[[Outcome], None]) -> None:
        """Start the work on ``name``; call ``done`` with its outcome, from any thread."""
        ...


def schedule(  # noqa: PLR0913 - every bound is a keyword the commands give
    names: Iterable[str],
    servers: Mapping[str, str],
    runner: Runner,
    *,
    parallel: int,
    per_server: int | None = None,
    stop: threading.Event | None = None,
    started: Callable[[str], None] | None = None,
    finished: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``runner`` on each of ``names``, within the bounds; the outcomes in name order.

    Args:
        names: The databases, in the order to start them (per server).
        servers: The server of each name (:func:`~dynroute.tenants.server_of`).
        runner: What starts the work.
        parallel: At most this many at once.
        per_server: At most this many at once on one server (by default, the share).
        stop: Once set, nothing more starts; the ones not started are "not run".
        started: Called (in this thread) as each starts.
        finished: Called (in this thread) with each outcome as it arrives.
    """
    order = list(names)
    bounded = _Bounded(order, servers, parallel, per_server)
    arrived: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    outcomes: dict[str, Outcome] = {}
    while True:
        while not (stop is not None and stop.is_set()) and (name := bounded.next()) is not None:
            if started is not None:
                started(name)
            runner.start(name, arrived.put)
        if not bounded.running:
            break
        outcome = _get(arrived, stop)
        if outcome is not None:
            bounded.ended(outcome.name)
            outcomes[outcome.name] = outcome
            if finished is not None:
                finished(outcome)
    for name in bounded.left():
        outcomes[name] = Outcome(name, "not run")
    return [outcomes[name] for name in order]


class _Bounded:
    """The names waiting, by server, and how many run on each: which may start next."""

    def __init__(
        self, order: list[str], servers: Mapping[str, str], parallel: int, per_server: int | None
    ) -> None:
        self._servers = servers
        self._parallel = parallel
        self._per_server = per_server
        self._waiting: dict[str, deque[str]] = {}
        for name in order:
            self._waiting.setdefault(servers[name], deque()).append(name)
        self._running: Counter[str] = Counter()
        self.running = 0

    def next(self) -> str | None:
        """The next name to start within the bounds (counted as running), or ``None``."""
        if self.running >= self._parallel:
            return None
        server = _next_server(self._waiting, self._running, self._parallel, self._per_server)
        if server is None:
            return None
        name = self._waiting[server].popleft()
        if not self._waiting[server]:
            del self._waiting[server]
        self._running[server] += 1
        self.running += 1
        return name

    def ended(self, name: str) -> None:
        """``name``'s work ended: its slot is free."""
        self._running[self._servers[name]] -= 1
        self.running -= 1

    def left(self) -> list[str]:
        """The names never started."""
        return [name for names in self._waiting.values() for name in names]


def _get(arrived: queue.SimpleQueue[Outcome], stop: threading.Event | None) -> Outcome | None:
    """The next outcome; ``None`` now and then, so that a stop request is seen."""
    try:
        return arrived.get(timeout=None if stop is None else 0.2)
    except queue.Empty:
        return None


def _next_server(
    waiting: Mapping[str, deque[str]],
    running: Counter[str],
    parallel: int,
    per_server: int | None,
) -> str | None:
    """The server with work waiting and a free slot, the least busy first.

    Least busy first is what keeps each server to its share of ``parallel`` while
    others have work waiting; ``per_server`` caps each one besides.
    """
    cap = per_server or parallel
    free = [server for server in waiting if running[server] < cap]
    return min(free, key=lambda server: running[server]) if free else None


class Threads:
    """Work in a pool of threads: ``work(name)`` returns the outcome."""

    def __init__(self, work: Callable[[str], Outcome], size: int) -> None:
        """A pool of ``size`` threads (closed by :meth:`close`, or ``with``)."""
        self._work = work
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="dynroute")

    def start(self, name: str, done: Callable[[Outcome], None]) -> None:
        """Run the work on ``name`` in a thread of the pool."""

        def report(future: Future[Outcome]) -> None:
            error = future.exception()
            done(failure(name, error) if error is not None else future.result())

        self._executor.submit(self._work, name).add_done_callback(report)

    def __enter__(self) -> Self:
        """Use the pool."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Wait for the threads and end them."""
        self._executor.shutdown(wait=True)


class Processes:
    """Work in worker processes: ``work(name)``, a module-level function, returns the outcome.

    Workers are forked from a fresh ``forkserver`` process (never from this one, whose
    threads and connections a fork would copy), ignore Ctrl-C (the parent decides
    what stops), set Django up once, and are replaced after ``recycle`` databases.
    """

    def __init__(self, work: Callable[[str], Outcome], size: int, *, recycle: int) -> None:
        """Start ``size`` workers."""
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._work = work
        self._pool: Pool = context.Pool(
            size,
            initializer=_set_up_worker,
            initargs=(os.environ.get("DJANGO_SETTINGS_MODULE", ""),),
            maxtasksperchild=recycle,
        )

    def start(self, name: str, done: Callable[[Outcome], None]) -> None:
        """Run the work on ``name`` in a worker."""
        started = time.monotonic()

        def lost(error: BaseException) -> None:
            outcome = failure(name, error)
            outcome.seconds = time.monotonic() - started
            done(outcome)

        self._pool.apply_async(self._work, (name,), callback=done, error_callback=lost)

    def __enter__(self) -> Self:
        """Use the workers."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """Let the workers finish and end; after an interruption, end them at once."""
        if exc_type is None:
            self._pool.close()
        else:
            self._pool.terminate()
        self._pool.join()


def _set_up_worker(settings_module: str) -> None:
    """In a new worker: ignore Ctrl-C, and set Django up with the parent's settings."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    django.setup()


def tell_started(name: str, operation: str) -> None:
    """Send ``database_started`` for ``name`` (robustly: a receiver's error is logged)."""
    observe.database_started.send_robust(None, name=name, operation=operation)


def tell_finished(outcome: Outcome, operation: str) -> None:
    """Send ``database_finished`` for ``outcome`` (robustly)."""
    observe.database_finished.send_robust(
        None,
        name=outcome.name,
        operation=operation,
        status=outcome.status,
        error=outcome.error,
        seconds=outcome.seconds,
    )


def failure(name: str, error: BaseException) -> Outcome:
    """The outcome of work that raised ``error`` (whose message is already scrubbed)."""
    outcome = Outcome(name, "failed", error=f"{type(error).__name__}: {error}"[:1000])
    outcome.exception = error
    return outcome
