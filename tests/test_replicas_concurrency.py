"""Read-your-writes under concurrency: 200 asyncio tasks and 16 threads, each in its own block.

The replicas never receive the primary's rows (tests/settings.py): a read that a pin
should have sent to the primary comes back stale, and a pin that leaked into a task
that did not write sends its reads to the primary. Writers and readers run at the
same time: every reader reads while writers' pins exist.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from dynroute import PrimaryReplica, in_database
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "replica1", "replica2"], transaction=True)

REPLICAS = ("replica1", "replica2")
TASKS = 200
THREADS = 16


def policy() -> PrimaryReplica:
    """One policy shared by every task and thread, as a site has."""
    return PrimaryReplica("default", REPLICAS)


def read(name: str) -> tuple[str, bool]:
    """Where a read goes here, and whether it finds ``name``."""
    return Item.objects.all().db, Item.objects.filter(name=name).exists()


def check(results: dict[str, tuple[str, bool]], count: int) -> None:
    """Writers read their own rows from the primary; readers read a replica, unpinned."""
    assert len(results) == count
    stale = [
        name for name, seen in results.items() if name.startswith("w") and seen != ("default", True)
    ]
    leaked = [
        name for name, seen in results.items() if name.startswith("r") and seen[0] not in REPLICAS
    ]
    assert stale == [], f"{len(stale)} writers did not read their own write"
    assert leaked == [], f"{len(leaked)} readers were pinned by another's write"


def test_200_tasks_each_read_their_own_write_and_no_pin_leaks() -> None:
    """Half the tasks write then read; the others read while those pins are active."""
    shared = policy()

    async def task(
        name: str, arrived: list[int], written: asyncio.Event, results: dict[str, Any]
    ) -> None:
        async with in_database(policy=shared):
            if name.startswith("w"):
                await Item.objects.acreate(name=name)
            arrived.append(1)
            if len(arrived) == TASKS:
                written.set()
            await written.wait()  # every writer has written: its pin is active now
            results[name] = await sync_to_async(read)(name)

    async def main() -> dict[str, Any]:
        results: dict[str, Any] = {}
        arrived: list[int] = []
        written = asyncio.Event()  # a barrier (asyncio.Barrier is Python 3.11+)
        names = [f"{'w' if n % 2 else 'r'}{n}" for n in range(TASKS)]
        await asyncio.gather(*(task(name, arrived, written, results) for name in names))
        return results

    results = asyncio.run(main())
    check(results, TASKS)
    assert Item.objects.count() == TASKS // 2


def test_16_threads_each_read_their_own_write_and_no_pin_leaks() -> None:
    """As above, with threads: each has its own connections and its own route."""
    shared = policy()
    written = threading.Barrier(THREADS, timeout=60)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            with in_database(policy=shared):
                if name.startswith("w"):
                    Item.objects.create(name=name)
                written.wait()
                results[name] = read(name)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
            written.abort()
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=work, args=(f"{'w' if n % 2 else 'r'}{n}",)) for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check(results, THREADS)
