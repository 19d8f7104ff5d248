"""in_database in async code: async with, the async ORM, tasks, cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import random

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import router

from dynroute import PrimaryReplica, in_database
from dynroute.core._stack import CURRENT
from dynroute.exceptions import UnknownDatabaseError
from tests.helpers import cancel_once_ready
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class Tag:
    """A custom policy that answers a name of its own, to tell routes apart."""

    def __init__(self, name: str) -> None:
        self.name = name

    def db_for_read(self, model, /, **hints):
        return self.name

    def db_for_write(self, model, /, **hints):
        return self.name


def seeded(default: int, other: int) -> None:
    """Put ``default`` items in default and ``other`` items in other."""
    Item.objects.using("default").bulk_create(Item(name="d") for _ in range(default))
    Item.objects.using("other").bulk_create(Item(name="o") for _ in range(other))


def test_async_orm_queries_follow_async_with():
    """acount() inside ``async with in_database("other")`` counts 'other'."""
    seeded(default=2, other=5)

    async def main() -> tuple[int, int, int]:
        async with in_database("other") as route:
            inside = await Item.objects.acount()
            assert route.alias == "other"
        outside = await Item.objects.acount()
        async with in_database("other", write=True):
            await Item.objects.acreate(name="async write")
        return inside, outside, await Item.objects.using("other").acount()

    assert async_to_sync(main)() == (5, 2, 6)


def test_two_hundred_interleaved_tasks_each_see_only_their_own_route():
    """200 tasks, each in its own (nested) route, switching at every await."""
    errors: list[str] = []

    async def worker(n: int) -> None:
        rng = random.Random(n)
        own = Tag(f"task-{n}")
        async with in_database(policy=own):
            for step in range(20):
                await asyncio.sleep(0)
                if router.db_for_read(Item) != own.name:
                    errors.append(f"task {n} step {step}: read {router.db_for_read(Item)}")
                if rng.random() < 0.3:
                    inner = Tag(f"task-{n}-inner-{step}")
                    async with in_database(policy=inner):
                        await asyncio.sleep(0)
                        if router.db_for_write(Item) != inner.name:
                            errors.append(f"task {n} inner: {router.db_for_write(Item)}")
                    if router.db_for_write(Item) != own.name:
                        errors.append(f"task {n} after inner: {router.db_for_write(Item)}")

    async def main() -> None:
        await asyncio.gather(*(worker(n) for n in range(200)))

    asyncio.run(main())
    assert errors == []
    assert CURRENT.get() is None


def test_concurrent_tasks_query_their_own_databases():
    """Tasks alternating between two databases each count their own rows."""
    seeded(default=3, other=7)
    expected = {"default": 3, "other": 7}

    async def worker(n: int) -> tuple[str, list[int]]:
        alias = "other" if n % 2 else "default"
        counts = []
        async with in_database(alias):
            for _ in range(3):
                counts.append(await Item.objects.acount())
                await asyncio.sleep(0)
        return alias, counts

    async def main() -> list[tuple[str, list[int]]]:
        return await asyncio.gather(*(worker(n) for n in range(40)))

    for alias, counts in async_to_sync(main)():
        assert counts == [expected[alias]] * 3


def test_async_with_checks_the_alias_on_entry_every_time_until_found():
    """An unknown alias fails at ``async with``, naming it; a known one is checked once."""

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(UnknownDatabaseError, match="'missing'"):
                async with in_database("missing"):
                    pytest.fail("the body must not run")
        block = in_database("other")
        async with block, block:
            assert router.db_for_read(Item) == "other"

    asyncio.run(main())


@pytest.mark.django_db(databases=["default", "replica1"], transaction=True)
def test_a_primary_replica_block_left_by_async_with_forgets_its_writes():
    """Reads pinned to the primary by a write end with the block: the next one reads a replica."""
    policy = PrimaryReplica("default", ["replica1"])

    async def main() -> list[str]:
        seen = []
        async with in_database(policy=policy):
            await Item.objects.acreate(name="written")
            seen.append(Item.objects.all().db)
        async with in_database(policy=policy):
            seen.append(Item.objects.all().db)
        return seen

    assert asyncio.run(main()) == ["default", "replica1"]


def test_the_route_follows_sync_to_async_and_async_to_sync():
    """Code bridged between sync and async keeps the block's route."""

    def sync_read() -> str:
        return router.db_for_read(Item)

    async def async_read() -> str:
        return router.db_for_read(Item)

    async def main() -> tuple[str, str]:
        async with in_database("other"):
            bridged = await sync_to_async(sync_read)()
            nested = await sync_to_async(async_to_sync(async_read))()
        return bridged, nested

    assert asyncio.run(main()) == ("other", "other")


def test_copy_context_carries_the_route_into_an_executor():
    """Work submitted with copy_context().run (or asyncio.to_thread) is routed."""

    async def main() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        async with in_database("other"):
            ctx = contextvars.copy_context()
            in_executor = await loop.run_in_executor(None, ctx.run, router.db_for_read, Item)
            in_thread = await asyncio.to_thread(router.db_for_read, Item)
        return in_executor, in_thread

    assert asyncio.run(main()) == ("other", "other")


def test_a_cancelled_task_restores_the_enclosing_route():
    """CancelledError leaving an inner block gives the outer route back."""
    seen: list[str] = []

    async def victim(ready: asyncio.Event) -> None:
        async with in_database("other", write=True):
            try:
                async with in_database("default", write=True):
                    ready.set()
                    await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append(router.db_for_write(Item))
                raise

    cancel_once_ready(victim)
    seen.append(router.db_for_write(Item))
    assert seen == ["other", "default"]


def test_a_task_started_inside_a_block_keeps_the_route_it_started_with():
    """Child tasks copy the route; the parent leaving its block does not change theirs."""

    async def child(gate: asyncio.Event) -> str:
        await gate.wait()
        return router.db_for_read(Item)

    async def main() -> tuple[str, str]:
        gate = asyncio.Event()
        async with in_database("other"):
            task = asyncio.create_task(child(gate))
        gate.set()
        return await task, router.db_for_read(Item)

    assert asyncio.run(main()) == ("other", "default")


def test_a_task_entering_a_block_does_not_change_its_parent():
    """Routes set inside a child task stay in the child."""

    async def child() -> None:
        block = in_database("other")
        await block.__aenter__()  # left open on purpose: the task's context ends with it

    async def main() -> str:
        await asyncio.create_task(child())
        return router.db_for_read(Item)

    assert asyncio.run(main()) == "default"


def test_one_block_object_shared_by_tasks():
    """Tasks entering the same block object concurrently do not disturb each other."""
    block = in_database("other")

    async def worker() -> list[str]:
        seen = []
        for _ in range(10):
            async with block:
                await asyncio.sleep(0)
                seen.append(router.db_for_read(Item))
            await asyncio.sleep(0)
            seen.append(router.db_for_read(Item))
        return seen

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(worker() for _ in range(20)))

    for seen in asyncio.run(main()):
        assert seen == ["other", "default"] * 10
