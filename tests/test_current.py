"""current_route() and current_alias(): what is routed here, now."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dynroute import (
    ReadWrite,
    Route,
    WriteOnly,
    current_alias,
    current_route,
    in_database,
)
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class ItemsToOther:
    """A custom policy: reads of Item go to other, nothing else is decided."""

    def db_for_read(self, model, /, **hints):
        return "other" if model is Item else None

    def db_for_write(self, model, /, **hints):
        return None


def test_outside_every_block_nothing_is_routed():
    """No block: no route, and queries go to Django's default."""
    assert current_route() is None
    assert current_alias(Item) == "default"
    assert current_alias(Item, write=True) == "default"


def test_the_route_is_the_one_the_block_gave():
    """Inside a block, current_route() is what `with ... as route` gave."""
    block = in_database("other")
    with block as route:
        assert current_route() is route
        assert current_route() is block.route
    assert current_route() is None


def test_the_innermost_block_wins_and_the_outer_one_comes_back():
    """Nested blocks: the innermost route, then the enclosing one again."""
    with in_database("other", write=True) as outer:
        with in_database(policy=ItemsToOther()) as inner:
            assert current_route() is inner
            assert inner.alias is None
            assert isinstance(inner.policy, ItemsToOther)
        assert current_route() is outer
        assert outer == Route("other", ReadWrite("other"))


def test_current_alias_follows_each_direction_of_the_block():
    """Reads and writes are answered separately, as the ORM would route them."""
    with in_database("other"):
        assert current_alias(Item) == "other"
        assert current_alias(Item, write=True) == "default"
    with in_database(policy=WriteOnly("other")):
        assert current_alias(Item) == "default"
        assert current_alias(Item, write=True) == "other"


def test_current_alias_agrees_with_the_query_it_predicts():
    """The alias given is the one a query made at the same place uses."""
    with in_database("other", write=True):
        created = Item.objects.create(name="x")
        assert created._state.db == current_alias(Item, write=True) == "other"
        assert Item.objects.all().db == current_alias(Item) == "other"


def test_a_custom_policy_is_asked_for_the_model():
    """A custom policy's answer depends on the model: current_alias asks it."""

    class Other:
        pass

    with in_database(policy=ItemsToOther()):
        assert current_alias(Item) == "other"
        assert current_alias(Other) == "default"  # type: ignore[arg-type]


def test_another_thread_sees_its_own_route():
    """A thread started outside the block has no route, even while the block runs."""
    seen: list[object] = []
    with in_database("other"):
        worker = threading.Thread(target=lambda: seen.append(current_route()))
        worker.start()
        worker.join()
    assert seen == [None]


def test_a_task_sees_the_route_it_inherited_and_not_its_siblings():
    """In async code the route is per task: inherited at creation, private after."""

    async def inner_route() -> Route | None:
        with in_database("default"):
            await asyncio.sleep(0)
            return current_route()

    async def main() -> tuple[object, object, object]:
        with in_database("other") as route:
            inherited = await asyncio.create_task(_read_route())
            own = await asyncio.create_task(inner_route())
            return route, inherited, (own, current_route())

    async def _read_route() -> Route | None:
        return current_route()

    route, inherited, (own, after) = asyncio.run(main())
    assert inherited is route
    assert own is not None
    assert own.alias == "default"
    assert after is route


def test_current_alias_asks_a_custom_policy_for_writes_of_the_model():
    """A policy deciding writes per model: the alias for this model's writes."""

    class WritesOfItems:
        def db_for_read(self, model, /, **hints):
            return None

        def db_for_write(self, model, /, **hints):
            return "other" if model is Item else None

    with in_database(policy=WritesOfItems()):
        assert current_alias(Item, write=True) == "other"
        assert current_alias(Item) == "default"


def test_current_alias_inside_prevent_writes_only_asks():
    """Asking where a write would go is not a write: no WriteForbiddenError."""
    with in_database("other", write=True, prevent_writes=True):
        assert current_alias(Item, write=True) == "other"
        assert current_route() is not None
