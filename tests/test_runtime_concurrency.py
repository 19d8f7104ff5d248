"""One runtime configuration used by many threads and tasks at once.

Every block writes a row of its own and reads it back; at the end the runtime
database holds exactly those rows, default holds none, and the server shows no
session left for the runtime database (pg_stat_activity, MariaDB's process list, or
for SQLite the process's open files). Receivers hear of the configurations that blocks
in two threads register and close, none kept back.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import django
import pytest
from django.db import connections

from dynroute import in_database, signals
from dynroute.runtime import _registry, active_aliases
from tests import settings as test_settings
from tests.runtime import BACKEND, names, sessions
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.django_db(databases=["default", "other"])

THREADS, BLOCKS, TASKS = 8, 25, 20


def run_threads(configuration) -> list[str]:
    """8 threads x 25 blocks on one configuration; return what went wrong."""
    problems: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        barrier.wait()
        try:
            for i in range(BLOCKS):
                name = f"thread-{n}-{i:02}"
                with in_database(configuration, write=True):
                    Item.objects.create(name=name)
                    if not Item.objects.filter(name=name).exists():
                        problems.append(f"{name} not read back")
        except Exception as error:
            problems.append(f"thread {n}: {error!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


def expected_thread_rows() -> list[str]:
    """The rows run_threads writes."""
    return sorted(f"thread-{n}-{i:02}" for n in range(THREADS) for i in range(BLOCKS))


def test_eight_threads_times_twenty_five_blocks(runtime):
    """Right rows every time, and no session left once the threads finish."""
    assert run_threads(runtime) == []
    assert names(runtime) == expected_thread_rows()
    assert not Item.objects.using("default").exists()
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()


def test_twenty_concurrent_async_tasks(runtime):
    """20 tasks in ``async with`` on one configuration: right rows, nothing left open."""

    async def task(n: int) -> bool:
        name = f"task-{n:02}"
        async with in_database(runtime, write=True):
            await Item.objects.acreate(name=name)
            await asyncio.sleep(0)
            return await Item.objects.filter(name=name).aexists()

    async def main() -> list[bool]:
        return await asyncio.gather(*(task(n) for n in range(TASKS)))

    assert asyncio.run(main()) == [True] * TASKS
    assert names(runtime) == [f"task-{n:02}" for n in range(TASKS)]
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()


@pytest.mark.skipif(
    BACKEND != "postgresql" or django.VERSION < (5, 1),
    reason="connection pools need PostgreSQL and Django 5.1+",
)
def test_a_pooled_configuration_under_threads_closes_its_pool(runtime):
    """With OPTIONS['pool'], the pool is closed when the last block leaves."""
    pooled = {**runtime, "OPTIONS": {"pool": {"min_size": 2, "max_size": 4, "timeout": 10}}}
    with in_database(pooled) as route:
        assert connections[route.alias].pool is not None
    assert run_threads(pooled) == []
    assert names(runtime) == expected_thread_rows()
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()
    assert set(connections.databases) == set(test_settings.DATABASES)  # the pool's alias is gone


@pytest.mark.skipif(
    BACKEND != "postgresql" or django.VERSION < (5, 1),
    reason="connection pools need PostgreSQL and Django 5.1+",
)
def test_a_pooled_configuration_under_async_tasks_closes_its_pool(runtime):
    """Async tasks on a pooled configuration leave no session behind."""
    pooled = {**runtime, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2, "timeout": 10}}}

    async def task(n: int) -> None:
        async with in_database(pooled, write=True):
            await Item.objects.acreate(name=f"pooled-{n:02}")

    async def main() -> None:
        await asyncio.gather(*(task(n) for n in range(TASKS)))

    asyncio.run(main())
    assert len(names(runtime)) == TASKS
    assert sessions(runtime, expected=0) == 0


class StoppingSender:
    """The registry's sender lock: as it is first released, another thread runs a block.

    That thread queues its configuration events while the sender still holds the lock,
    so it leaves them to the sender, which has just found the queue empty.
    """

    def __init__(self, in_another_thread: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._in_another_thread = in_another_thread
        self.waited: list[bool] = []  # asserted by the test: raising here keeps the lock

    def acquire(self, blocking: bool = True) -> bool:  # noqa: FBT001, FBT002 - Lock's signature
        return self._lock.acquire(blocking)

    def release(self) -> None:
        if not self.waited:
            worker = threading.Thread(target=self._in_another_thread)
            worker.start()
            worker.join(timeout=30)
            self.waited.append(not worker.is_alive())
        self._lock.release()


def test_events_left_to_a_sender_as_it_stops_are_heard_before_its_block_starts(
    runtime, fresh_alias, monkeypatch
):
    """A sender looks at the queue again once it stops: another thread's events are not kept."""
    heard: list[tuple[str, str]] = []
    meanwhile: list[str] = []

    def receiver(sender: object, alias: str, signal: Any, **kwargs: Any) -> None:
        kind = "registered" if signal is signals.configuration_registered else "closed"
        heard.append((kind, alias))

    def in_another_thread() -> None:
        with in_database(runtime, alias=fresh_alias("meanwhile")) as route:
            meanwhile.append(route.alias)

    sender = StoppingSender(in_another_thread)
    monkeypatch.setattr(_registry, "_SENDING", sender)
    signals.configuration_registered.connect(receiver)
    signals.configuration_closed.connect(receiver)
    try:
        with in_database(runtime, alias=fresh_alias("sending")) as route:
            heard_on_entry = list(heard)
    finally:
        signals.configuration_registered.disconnect(receiver)
        signals.configuration_closed.disconnect(receiver)
    assert sender.waited == [True]
    assert heard_on_entry == [
        ("registered", route.alias),
        ("registered", meanwhile[0]),
        ("closed", meanwhile[0]),
    ]
    assert heard[3:] == [("closed", route.alias)]
    assert not active_aliases()
