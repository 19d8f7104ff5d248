"""in_database across threads: isolation, sharing one block, executors."""

from __future__ import annotations

import contextvars
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections, router

from dynroute import in_database
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"], transaction=True)

ALIASES = ("default", "other")


@pytest.fixture
def counts():
    """Committed rows, 3 in default and 5 in other, visible to every thread."""
    Item.objects.using("default").bulk_create(Item(name="d") for _ in range(3))
    Item.objects.using("other").bulk_create(Item(name="o") for _ in range(5))
    return {"default": 3, "other": 5}


def test_sixteen_threads_with_random_nested_routes_see_no_misroute(counts):  # noqa: C901 - one scenario, checked at every step
    """16 threads nest random blocks; every decision and every count is their own."""
    misroutes: list[str] = []
    operations = [0] * 16
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        rng = random.Random(n)
        barrier.wait()
        try:
            for _ in range(60):
                expected_read = expected_write = "default"
                stack = []
                for _ in range(rng.randint(1, 4)):
                    alias = rng.choice(ALIASES)
                    read, write = rng.choice([(True, False), (True, True), (False, True)])
                    block = in_database(alias, read=read, write=write)
                    block.__enter__()
                    stack.append((block, expected_read, expected_write))
                    expected_read = alias if read else expected_read
                    expected_write = alias if write else expected_write
                    got = (router.db_for_read(Item), router.db_for_write(Item))
                    if got != (expected_read, expected_write):
                        misroutes.append(f"thread {n}: {got} != {expected_read, expected_write}")
                    if rng.random() < 0.25:
                        seen = Item.objects.count()
                        if seen != counts[expected_read]:
                            misroutes.append(f"thread {n}: counted {seen} in {expected_read}")
                    operations[n] += 1
                while stack:
                    block, expected_read, expected_write = stack.pop()
                    block.__exit__(None, None, None)
                    got = (router.db_for_read(Item), router.db_for_write(Item))
                    if got != (expected_read, expected_write):
                        misroutes.append(f"thread {n} after exit: {got}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert misroutes == []
    assert all(done > 0 for done in operations)


def test_a_route_does_not_reach_a_plain_thread():
    """A thread started inside a block is not routed (it has a fresh context)."""
    seen = []
    with in_database("other"):
        thread = threading.Thread(target=lambda: seen.append(router.db_for_read(Item)))
        thread.start()
        thread.join()
    assert seen == ["default"]


def test_copy_context_carries_a_route_into_a_thread_pool(counts):
    """executor.submit(copy_context().run, fn) runs fn in the block's route."""

    def count() -> int:
        try:
            return Item.objects.count()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=4) as pool, in_database("other"):
        futures = [pool.submit(contextvars.copy_context().run, count) for _ in range(8)]
        plain = pool.submit(count)
        assert [f.result() for f in futures] == [counts["other"]] * 8
        assert plain.result() == counts["default"]


def test_one_block_object_shared_by_threads(counts):
    """Threads entering the same block object at once each get their own entry."""
    block = in_database("other")
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(20):
                with block:
                    inside = Item.objects.count()
                results.append((inside, router.db_for_read(Item)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(counts["other"], "default")] * 160
