"""unlocked() and the route lock under it, without a request."""

from __future__ import annotations

import asyncio

import pytest

from dynroute import in_database, tenants, unlocked
from dynroute.exceptions import RouteLockedError, RouteStateError

pytestmark = pytest.mark.django_db(databases=["default", "other"])


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
    with pytest.raises(RouteLockedError, match=r"locked to database 'other'") as raised:
        in_database("default").__enter__()
    assert "unlocked()" in str(raised.value)
    assert "'default'" in str(raised.value)


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
    """unlocked() left without entry, a lock released without one: RouteStateError."""
    with pytest.raises(RouteStateError, match=r"unlocked\(\) was left without"):
        unlocked().__exit__(None, None, None)
    with pytest.raises(RouteStateError, match="released without being active"):
        tenants.release()


def test_leaving_unlocked_while_a_lock_is_innermost_raises(locked_to_other):
    """unlocked() must be the innermost scope when it is left."""
    with pytest.raises(RouteStateError, match="innermost"):
        unlocked().__exit__(None, None, None)


def test_outside_a_lock_unlocked_changes_nothing():
    """Without a lock, every block may be entered, in unlocked() or not."""
    with unlocked(), in_database("default"), in_database("other"):
        pass
    assert repr(unlocked()) == "unlocked()"
