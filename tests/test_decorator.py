"""in_database as a decorator of sync and async functions."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from asgiref.sync import async_to_sync
from django.db import router

from dynroute import DynamicDbRouter, in_database
from dynroute.core._stack import CURRENT
from dynroute.exceptions import UsageError
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


@in_database("other", write=True)
def create_and_count(name: str, *, times: int = 1) -> int:
    """Create items and count them, wherever the decorator routes."""
    for _ in range(times):
        Item.objects.create(name=name)
    return Item.objects.count()


def test_a_decorated_function_is_routed_on_every_call():
    """Each call is routed, the first and every later one."""
    assert create_and_count("a") == 1
    assert create_and_count("b", times=2) == 3
    assert Item.objects.using("other").count() == 3
    assert Item.objects.using("default").count() == 0
    assert CURRENT.get() is None


def test_the_decorator_keeps_name_docstring_and_signature():
    """functools.wraps: introspection sees the original function."""
    assert create_and_count.__name__ == "create_and_count"
    assert create_and_count.__doc__ == "Create items and count them, wherever the decorator routes."
    assert str(inspect.signature(create_and_count)) == "(name: 'str', *, times: 'int' = 1) -> 'int'"


def test_recursion_nests_the_same_block():
    """A decorated function calling itself nests its block, then unwinds it."""

    @in_database("other", write=True)
    def depth(n: int) -> int:
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(20) == 20
    assert CURRENT.get() is None


def test_an_async_function_stays_a_coroutine_function_routed_while_it_runs():
    """Decorating an async def gives an async def routed across its awaits."""

    @in_database("other", write=True)
    async def where() -> tuple[str, str]:
        await asyncio.sleep(0)
        return router.db_for_read(Item), router.db_for_write(Item)

    assert inspect.iscoroutinefunction(where)
    assert async_to_sync(where)() == ("other", "other")
    assert router.db_for_read(Item) == "default"


def test_an_async_function_is_not_routed_before_it_is_awaited():
    """Creating the coroutine does not enter the block; awaiting it does."""
    seen = []

    @in_database("other")
    async def note() -> None:
        seen.append(router.db_for_read(Item))

    async def main() -> None:
        pending = note()
        seen.append(router.db_for_read(Item))
        await pending

    asyncio.run(main())
    assert seen == ["default", "other"]


def test_generator_functions_are_refused_with_what_to_do():
    """A generator would leak its route to the consumer: refused at decoration."""

    def rows():
        yield from Item.objects.all()

    with pytest.raises(UsageError, match=r"generator function .*rows.*list"):
        in_database("other")(rows)


def test_async_generator_functions_are_refused():
    """Async generators are refused for the same reason."""

    async def rows():
        yield 1

    with pytest.raises(UsageError, match="generator"):
        in_database("other")(rows)


@pytest.mark.parametrize("thing", [3, Item])
def test_only_functions_can_be_decorated(thing):
    """Decorating a class or a non-callable is refused."""
    with pytest.raises(UsageError, match="decorates functions"):
        in_database("other")(thing)


# Decorating while a block is active: the decorator takes nothing from where it is applied.


def test_a_function_decorated_inside_a_block_routes_by_its_own_decorator_when_called():
    """Applied inside a block on "other", it routes to "default" when called, anywhere."""
    with in_database("other", write=True):
        counted = in_database("default", write=True)(Item.objects.count)
        writes = in_database("default", write=True)(lambda: Item.objects.create(name="d"))
        assert router.db_for_read(Item) == "other"  # decorating changed nothing here
    writes()
    assert Item.objects.using("default").count() == 1
    assert Item.objects.using("other").count() == 0
    assert counted() == 1
    assert CURRENT.get() is None


def test_a_function_decorated_inside_a_block_nests_in_the_block_it_is_called_in():
    """Called inside another block, its block is the inner one; read-only, writes fall back."""
    ours = DynamicDbRouter()  # its own answers: None is "no opinion"
    with in_database("default", write=True):
        reads_other = in_database("other")(
            lambda: (ours.db_for_read(Item), ours.db_for_write(Item))
        )
    assert reads_other() == ("other", None)  # no block around it: writes have no opinion
    with in_database("default", write=True):
        assert reads_other() == ("other", "default")  # the enclosing block's write route
        assert router.db_for_read(Item) == "default"  # and the enclosing route is back


def test_an_async_function_decorated_inside_a_block_is_routed_only_while_it_runs():
    """Decorated inside a block, awaited outside it: routed by its own decorator then."""

    async def where() -> str | None:
        return router.db_for_read(Item)

    with in_database("default"):
        decorated = in_database("other")(where)
    assert asyncio.run(decorated()) == "other"
    assert CURRENT.get() is None
