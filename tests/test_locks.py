"""unlocked() and the route lock under it, without a request."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connections

from dynroute import in_database, tenants, unlocked
from dynroute.exceptions import RouteLockedError, RouteStateError

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class Custom:
    """A custom policy: it has no single database, whatever it answers."""

    def db_for_read(self, model, /, **hints):
        return "other"

    def db_for_write(self, model, /, **hints):
        return "other"


def refusal(block: object, target: str) -> str:
    """The message refusing ``block`` (routing to ``target``) in code locked to "other"."""
    return (
        f"This request is locked to database 'other' (DYNROUTE_REQUEST_LOCK): {block!r} "
        f"routes to {target}. Where reaching another database is meant, enter the block "
        "inside `with dynroute.unlocked():`."
    )


@pytest.fixture
def locked_to_other():
    """The code here locked to "other", as DatabaseMiddleware locks a request."""
    tenants.lock("other")
    yield
    tenants.release()


def test_a_lock_refuses_other_aliases_and_admits_its_own(locked_to_other):
    """Only the locked alias may be entered; the message names both and the way out."""
    with in_database("other"):
        pass
    block = in_database("default")
    with pytest.raises(RouteLockedError) as raised, block:
        pass  # pragma: no cover - refused
    assert str(raised.value) == refusal(block, "database 'default'")


def test_a_custom_policy_is_refused_as_having_no_single_database(locked_to_other):
    """A policy asked per query could reach any database: refused, and the message says why."""
    block = in_database(policy=Custom())
    with pytest.raises(RouteLockedError) as raised, block:
        pass  # pragma: no cover - refused
    assert str(raised.value) == refusal(block, "a policy with no single database")


def test_a_block_admitted_once_is_checked_again_on_every_entry(locked_to_other):
    """A block entered inside unlocked() is refused outside it: entries do not skip the lock."""
    block = in_database("default")
    with unlocked():
        for _ in range(2):
            with block:
                pass
    with pytest.raises(RouteLockedError), block:
        pass  # pragma: no cover - refused


def test_async_entry_of_a_runtime_configuration_checks_the_lock(runtime):
    """`async with` on a settings dict: refused before it is registered, unless locked to it."""
    block = in_database(runtime)
    alias = block.route.alias
    before = set(connections.settings)

    async def enter() -> str:
        async with block as route:
            return route.alias

    tenants.lock("other")
    try:
        with pytest.raises(RouteLockedError) as raised:
            asyncio.run(enter())
    finally:
        tenants.release()
    assert str(raised.value) == refusal(block, f"database {alias!r}")
    assert set(connections.settings) == before
    tenants.lock(alias)
    try:
        assert asyncio.run(enter()) == alias
    finally:
        tenants.release()


def test_a_lock_set_inside_another_is_released_back_to_it():
    """Locks nest: releasing the inner one brings the outer one back."""
    tenants.lock("other")
    try:
        tenants.lock("default")
        with in_database("default"):
            pass
        tenants.release()
        with (
            pytest.raises(RouteLockedError, match="locked to database 'other'"),
            in_database("default"),
        ):
            pass  # pragma: no cover - refused
    finally:
        tenants.release()


def test_unlocked_nests_and_restores_the_lock(locked_to_other):
    """Leaving unlocked() restores the lock; nested scopes each restore their own."""
    with unlocked():
        with unlocked(), in_database("default"):
            pass
        with in_database("default"):
            pass
    with pytest.raises(RouteLockedError):
        in_database("default").__enter__()


def test_unlocked_decorates_sync_and_async_functions(locked_to_other):
    """@unlocked and @unlocked() on sync and async functions."""

    @unlocked
    def bare() -> str:
        with in_database("default") as route:
            return str(route.alias)

    @unlocked()
    async def called() -> str:
        async with in_database("default") as route:
            return str(route.alias)

    assert bare() == "default"
    assert asyncio.run(called()) == "default"


def test_leaving_what_is_not_active_raises():
    """unlocked() left without entry, a lock released without one: RouteStateError, saying why."""
    with pytest.raises(RouteStateError) as left:
        unlocked().__exit__(None, None, None)
    assert str(left.value) == (
        "unlocked() was left without being the innermost scope here: a scope must be left in "
        "the thread or task that entered it, once per entry."
    )
    with pytest.raises(RouteStateError) as released:
        tenants.release()
    assert str(released.value) == (
        "A route lock was released without being active here: a lock must be released in the "
        "thread or task that set it, once."
    )


def test_leaving_unlocked_while_a_lock_is_innermost_raises(locked_to_other):
    """unlocked() must be the innermost scope when it is left."""
    with pytest.raises(RouteStateError, match="innermost"):
        unlocked().__exit__(None, None, None)


def test_outside_a_lock_unlocked_changes_nothing():
    """Without a lock, every block may be entered, in unlocked() or not."""
    with unlocked(), in_database("default"), in_database("other"):
        pass
    assert repr(unlocked()) == "unlocked()"
