"""DatabaseMiddleware: each request in the block its resolver chooses, under WSGI and ASGI.

Tenants live in three databases of the run's backend (``TENANT_DATABASES``), each with
a marker row of its own: a read's rows show which database it reached, not only the
router's answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

import dynroute
from dynroute import _switches
from dynroute.exceptions import ConfigurationError, RouteLockedError, UsageError
from dynroute.middleware import DatabaseMiddleware
from dynroute.runtime import active_aliases
from tests import browsing, tenant_views
from tests.browsing import Browser
from tests.tenant_views import CHUNKS, TENANT_DATABASES
from tests.testapp.models import Item

DATABASES = ["default", *TENANT_DATABASES]
pytestmark = pytest.mark.django_db(databases=DATABASES, transaction=True)

MARKERS = {alias: f"on-{alias}" for alias in DATABASES}
MIDDLEWARE = "dynroute.middleware.DatabaseMiddleware"
RESOLVER = "tests.tenant_views.tenant_database"
#: "wsgi": Client and sync views; "asgi": AsyncClient and async views.
MODES = ("wsgi", "asgi")


def served(**settings: Any) -> override_settings:
    """The tenant views behind the middleware; ``settings`` override the defaults."""
    return override_settings(
        ROOT_URLCONF="tests.tenant_views",
        MIDDLEWARE=[MIDDLEWARE],
        **{"DYNROUTE_REQUEST_ROUTE": RESOLVER, **settings},
    )


@pytest.fixture(autouse=True)
def _markers() -> None:
    """Put each database's marker row in it."""
    for alias, marker in MARKERS.items():
        Item.objects.using(alias).create(name=marker)


@pytest.fixture(params=MODES)
def browser(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Browser:
    """A client in each mode."""
    return Browser(request.param, loop)


def where(read: dict[str, Any]) -> str:
    """The database a reported read reached, by its marker row (the router must agree)."""
    return browsing.where(read, MARKERS)


def path(browser: Browser, view: str) -> str:
    """The path a browser's request to ``view`` has (an async view's under ASGI)."""
    return f"/{'a' if browser.mode == 'asgi' else ''}{view}/"


def source(response: Any) -> str:
    """Where the one read of a view's response went."""
    assert response.status_code == 200, response.content
    (read,) = response.json()["reads"]
    return where(read)


# Routing


@pytest.mark.parametrize("tenant", range(6))
def test_each_tenant_reads_and_writes_its_own_database(browser, tenant):
    """Reads and writes of a request go to the database the resolver named."""
    expected = TENANT_DATABASES[tenant % 3]
    with served():
        response = browser.get("reads", {"tenant": tenant, "name": f"saved-by-{tenant}"})
    assert source(response) == expected
    assert response.json()["write_db"] == expected
    assert Item.objects.using(expected).filter(name=f"saved-by-{tenant}").exists()


def test_no_tenant_means_no_block(browser):
    """A resolver returning None: the request runs as without the middleware."""
    with served():
        assert source(browser.get("reads")) == "default"


def test_a_policy_and_a_block_keep_their_own_flags(browser):
    """A RoutingPolicy or an in_database() block from the resolver routes as it says."""
    with served():
        assert source(browser.get("reads", {"tenant": "policy"})) == "replica1"
        response = browser.get("reads", {"tenant": "block"})  # read=True, write=False
    assert source(response) == "replica2"
    assert response.json()["write_db"] == "default"


def test_a_settings_dict_is_a_runtime_configuration_for_the_request(browser, runtime, monkeypatch):
    """A dict from the resolver: registered for the request, gone after it."""
    monkeypatch.setattr(tenant_views, "RUNTIME", {**runtime, "CONN_MAX_AGE": 0})
    with served():
        response = browser.get("reads", {"tenant": "config", "name": "in-the-runtime-database"})
    assert response.status_code == 200
    (read,) = response.json()["reads"]
    assert read["names"] == ["in-the-runtime-database"]
    assert read["db"] == response.json()["write_db"] != "default"
    assert not active_aliases()


def test_an_async_resolver_serves_asgi(loop):
    """Under ASGI the resolver may be a coroutine function."""
    browser = Browser("asgi", loop)
    with served(DYNROUTE_REQUEST_ROUTE="tests.tenant_views.atenant_database"):
        assert source(browser.get("reads", {"tenant": 1})) == "replica1"


def test_an_async_resolver_under_wsgi_is_refused_with_the_fix(loop):
    """A coroutine resolver cannot run in a sync chain: the error says what to do."""
    with (
        served(DYNROUTE_REQUEST_ROUTE="tests.tenant_views.atenant_database"),
        pytest.raises(UsageError) as raised,
    ):
        Browser("wsgi", loop).get("reads", {"tenant": 1})
    assert str(raised.value) == (
        "The resolver of settings.DYNROUTE_REQUEST_ROUTE is a coroutine function, which "
        "needs an async middleware chain (ASGI): make it a plain function under WSGI."
    )


def test_an_awaitable_answer_is_awaited_under_asgi(loop):
    """Not only a coroutine: any awaitable the resolver returns is awaited."""
    browser = Browser("asgi", loop)
    with served(DYNROUTE_REQUEST_ROUTE="tests.tenant_views.deferred_tenant_database"):
        assert source(browser.get("reads", {"tenant": 1})) == "replica1"


def test_an_awaitable_answer_under_wsgi_is_refused_with_the_fix(loop):
    """An awaitable that is not a coroutine (no close()) is refused as a coroutine is."""
    with (
        served(DYNROUTE_REQUEST_ROUTE="tests.tenant_views.deferred_tenant_database"),
        pytest.raises(UsageError, match="make it a plain function under WSGI"),
    ):
        Browser("wsgi", loop).get("reads", {"tenant": 1})


def test_a_streaming_response_is_read_in_the_tenants_database(browser):
    """The chunks, produced after the middleware returned, still read the tenant's database."""
    with served():
        response = browser.get("stream", {"tenant": 2})
        reads = browser.chunks(response)
    assert [where(read) for read in reads] == ["replica2"] * CHUNKS
    assert dynroute.current_route() is None


# The lock


def test_the_lock_refuses_a_block_on_another_database(browser):
    """With DYNROUTE_REQUEST_LOCK, entering a block on another alias raises."""
    with (
        served(DYNROUTE_REQUEST_LOCK=True),
        pytest.raises(RouteLockedError, match=r"locked to database 'other'.*'default'"),
    ):
        browser.get("elsewhere", {"tenant": 0})
    assert dynroute.current_route() is None


def test_unlocked_allows_it(browser):
    """Inside unlocked(), a locked request may enter a block on another database."""
    with served(DYNROUTE_REQUEST_LOCK=True):
        assert source(browser.get("elsewhere", {"tenant": 0, "unlocked": ""})) == "default"
        assert source(browser.get("reads", {"tenant": 0})) == "other"  # the lock is back
        with pytest.raises(RouteLockedError):  # and the block let in once is checked again
            browser.get("elsewhere", {"tenant": 0})


def test_a_block_entered_before_the_first_lock_is_checked_after_it(browser, monkeypatch):
    """Blocks skip the lock check until a lock exists; the first lock re-arms them all."""
    monkeypatch.setattr(_switches, "locks_used", False)  # as in a process that never locked
    with dynroute.in_database("default"):  # checked once, then entered on the fast path
        pass
    with served(DYNROUTE_REQUEST_LOCK=True), pytest.raises(RouteLockedError):
        browser.get("elsewhere", {"tenant": 0})


def test_the_same_database_may_be_entered_again_under_the_lock(browser):
    """A block on the request's own database is not another database."""
    with served(DYNROUTE_REQUEST_LOCK=True):
        assert source(browser.get("elsewhere", {"tenant": 1, "same": ""})) == "replica1"


def test_without_the_lock_other_databases_are_reachable(browser):
    """The lock is opt-in: without it, a request may enter any block."""
    with served():
        assert source(browser.get("elsewhere", {"tenant": 0})) == "default"


def test_a_lock_on_a_policy_without_one_database_is_refused(browser):
    """A custom policy has no single database to lock to: a UsageError says so."""
    with (
        served(DYNROUTE_REQUEST_LOCK=True),
        pytest.raises(UsageError) as raised,
    ):
        browser.get("reads", {"tenant": "policy-any"})
    message = str(raised.value)
    assert message.startswith("settings.DYNROUTE_REQUEST_LOCK locks a request to one database")
    assert message.endswith(
        f"for GET {path(browser, 'reads')}, whose policy has no single database: "
        "return an alias, a settings dict or a block on one."
    )


# Failures


def test_a_resolver_that_raises_fails_the_request_and_leaves_nothing(browser):
    """The resolver's error reaches the client; no block stays active or registered."""
    with served(), pytest.raises(LookupError, match="the resolver failed"):
        browser.get("reads", {"tenant": "boom"})
    assert dynroute.current_route() is None
    assert not active_aliases()


def test_an_unreachable_tenant_database_leaves_nothing_registered(
    browser, monkeypatch, dynroute_runtime_databases
):
    """A settings dict that cannot connect: the request fails, nothing stays registered."""
    unreachable = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/nonexistent/dynroute/tenant.sqlite3",
    }
    monkeypatch.setattr(tenant_views, "RUNTIME", unreachable)
    with served(), pytest.raises(dynroute.DynrouteError, match="Could not connect"):
        browser.get("reads", {"tenant": "config"})
    assert not active_aliases()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"DYNROUTE_REQUEST_ROUTE": None}, "needs settings.DYNROUTE_REQUEST_ROUTE"),
        ({"DYNROUTE_REQUEST_ROUTE": tenant_views.tenant_database}, "dotted path .*got function"),
        (
            {"DYNROUTE_REQUEST_ROUTE": "tests.tenant_views.nowhere"},
            r"^settings\.DYNROUTE_REQUEST_ROUTE = 'tests\.tenant_views\.nowhere' cannot be",
        ),
        ({"DYNROUTE_REQUEST_ROUTE": "tests.tenant_views.CHUNKS"}, "not a function"),
        ({"DYNROUTE_REQUEST_LOCK": "yes"}, "must be True or False, got 'yes'"),
    ],
)
def test_bad_settings_are_refused_naming_them(settings, message):
    """Each bad setting is a ConfigurationError naming it, when the chain is built."""
    with served(**settings), pytest.raises(ConfigurationError, match=message):
        DatabaseMiddleware(lambda _request: None)


def test_a_missing_route_setting_is_refused_saying_what_it_is():
    """Without DYNROUTE_REQUEST_ROUTE at all: what to set, when the chain is built."""
    with pytest.raises(ConfigurationError) as raised:
        DatabaseMiddleware(lambda _request: None)
    assert str(raised.value) == (
        "DatabaseMiddleware needs settings.DYNROUTE_REQUEST_ROUTE, the dotted path of a "
        "function (request) -> target; got NoneType."
    )


def test_a_resolver_returning_something_else_is_refused_by_type_only(browser, monkeypatch):
    """The message names the type, never the value (it may be settings with a password)."""
    monkeypatch.setattr(tenant_views, "tenant_database", lambda _request: ["s3cret"])
    with served(), pytest.raises(UsageError, match=r"returned a list for GET /") as raised:
        browser.get("reads", {"tenant": 0})
    assert "s3cret" not in str(raised.value)


def test_half_a_policy_is_refused_naming_what_a_resolver_may_return(browser):
    """An object with db_for_read() but no db_for_write() is not a RoutingPolicy."""
    with served(), pytest.raises(UsageError) as raised:
        browser.get("reads", {"tenant": "half-policy"})
    assert str(raised.value) == (
        "The resolver of settings.DYNROUTE_REQUEST_ROUTE returned a ReadsOnly for GET "
        f"{path(browser, 'reads')}: it must return an alias, a settings dict, a target "
        "(database_named()), a RoutingPolicy, an in_database() block, or None."
    )


@pytest.mark.parametrize(
    ("resolver", "shown"),
    [(RESOLVER, "tenant_database"), ("tests.tenant_views.resolver_object", "TenantResolver")],
)
def test_the_repr_shows_the_resolver_and_the_lock(resolver, shown):
    """A function by its name, an object by its type; and whether requests are locked."""
    with served(DYNROUTE_REQUEST_ROUTE=resolver, DYNROUTE_REQUEST_LOCK=True):
        middleware = DatabaseMiddleware(lambda _request: None)
    assert repr(middleware) == f"DatabaseMiddleware(resolver={shown}, lock=True)"


# Concurrency


def test_200_concurrent_async_requests_across_20_tenants_are_never_misrouted(loop):
    """Each request reads and writes its own tenant's database, whatever runs beside it."""
    clients = [AsyncClient() for _ in range(20)]

    async def one(number: int) -> tuple[int, str, str]:
        tenant = number % 20
        response = await clients[tenant].get(
            "/areads/", {"tenant": tenant, "name": f"t{tenant}-r{number}"}
        )
        assert response.status_code == 200, response.content
        (read,) = response.json()["reads"]
        return tenant, where(read), response.json()["write_db"]

    async def main() -> list[tuple[int, str, str]]:
        return await asyncio.gather(*(one(number) for number in range(200)))

    with served(DYNROUTE_REQUEST_LOCK=True):
        results = loop.run_until_complete(main())
    misrouted = [
        result for result in results if result[1:] != (TENANT_DATABASES[result[0] % 3],) * 2
    ]
    assert misrouted == []
    for alias in TENANT_DATABASES:
        written = Item.objects.using(alias).exclude(name=MARKERS[alias]).count()
        assert written == sum(1 for result in results if result[1] == alias)
    assert not Item.objects.using("default").exclude(name=MARKERS["default"]).exists()


def test_a_resolver_may_return_a_target_from_the_directory(browser):
    """``database_named()`` gives a DatabaseAlias: the request reads and writes there."""
    with served(DYNROUTE_REQUEST_ROUTE="tests.tenant_views.named_tenant"):
        response = browser.get("reads", {"tenant": 1, "name": "saved-by-name"})
    assert source(response) == "replica1"
    assert response.json()["write_db"] == "replica1"
