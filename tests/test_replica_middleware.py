"""PrimaryReplicaMiddleware: each request in a primary/replica block, pinned after a write.

Each test database holds a marker row of its own (``on-primary`` in default,
``on-replica1`` and ``on-replica2`` in the replicas, which never receive the
primary's rows), so the names a view's query returned show which database it reached;
the views also report the alias the router gave, and the two must agree.

The views are in tests/replica_views.py. Most tests run three ways: sync views under
WSGI (``Client``), async views under ASGI (``AsyncClient``), and sync views under ASGI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import types
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core import signing
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings

from dynroute import PrimaryReplica, in_database
from dynroute.exceptions import ConfigurationError, UsageError
from dynroute.http import _replicas as middleware
from dynroute.middleware import PrimaryReplicaMiddleware
from dynroute.replicas import _positions
from dynroute.signals import reads_pinned
from tests import browsing, replica_views
from tests import settings as test_settings
from tests.browsing import MODES, Browser
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.http import HttpResponseBase

DATABASES = ["default", "replica1", "replica2"]
pytestmark = pytest.mark.django_db(databases=DATABASES, transaction=True)

MIDDLEWARE = "dynroute.middleware.PrimaryReplicaMiddleware"
REPLICAS = ("replica1", "replica2")
#: Pinned by time: the replicas of these tests are databases of their own, with no
#: replication (tests/test_replica_standby.py pins by position on a real standby).
CONFIG: dict[str, Any] = {
    "primary": "default",
    "replicas": list(REPLICAS),
    "pin_seconds": 2,
    "pin": "time",
}
COOKIE = "dynroute_pin"
#: The row only each database has: where a query's rows came from.
MARKERS = {"default": "on-primary", "replica1": "on-replica1", "replica2": "on-replica2"}
#: The views with an async variant ("a" + their name).
ASYNC_VARIANTS = {
    "names",
    "create",
    "create-using",
    "primary",
    "stream",
    "stream-writes",
    "primary-stream",
}


def routed(*, settings: dict[str, Any] | None = None, **config: Any) -> override_settings:
    """The test URLs behind the middleware, configured by CONFIG updated with ``config``."""
    return override_settings(
        ROOT_URLCONF="tests.replica_views",
        MIDDLEWARE=[MIDDLEWARE],
        DYNROUTE_PRIMARY_REPLICA={**CONFIG, **config},
        **(settings or {}),
    )


@pytest.fixture(autouse=True)
def _markers() -> None:
    """Put each database's marker row in it."""
    for alias, marker in MARKERS.items():
        Item.objects.using(alias).create(name=marker)


@pytest.fixture(autouse=True)
def _app() -> Iterator[None]:
    """Serve the test URLs behind the middleware (a test may override the configuration).

    The middleware reads its settings when a client's first request builds it: a test
    that overrides them does so before its first request.
    """
    with routed():
        yield


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Django's signing clock and the middleware's, frozen on a whole second.

    A test moves them with ``now``. The pin's age is then exact (whatever the speed of
    the machine), 0 until moved.
    """
    frozen = types.SimpleNamespace(now=float(int(time.time())))
    fake = types.SimpleNamespace(time=lambda: frozen.now)
    monkeypatch.setattr(signing, "time", fake)
    monkeypatch.setattr(middleware, "time", fake)
    return frozen


@pytest.fixture(autouse=True)
def _verified(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start with no pin cookie found valid.

    Cookies signed in the same second are the same: one an earlier test verified would
    skip the signature check this test makes.
    """
    monkeypatch.setattr(middleware, "_VERIFIED", {})


@pytest.fixture(params=MODES)
def browser(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Browser:
    """A client in each mode."""
    return Browser(request.param, loop, ASYNC_VARIANTS)


@pytest.fixture
def new_browser(browser: Browser) -> Any:
    """Make another client in the same mode (a middleware chain of its own)."""
    return browser.another


def where(read: dict[str, Any]) -> str:
    """The database a reported read reached, by its marker row (the router must agree)."""
    return browsing.where(read, MARKERS)


def sources(response: Any) -> list[str]:
    """Where each read of a (non-streaming) view's response went."""
    assert response.status_code == 200, response.content
    return [where(read) for read in response.json()["reads"]]


def source(response: Any) -> str:
    """Where all the reads of a view's response went (failing if they went to several)."""
    found = set(sources(response))
    assert len(found) == 1, f"one request read from {found}"
    return found.pop()


def seen(response: Any) -> list[str]:
    """The names the last read of a view's response saw."""
    return response.json()["reads"][-1]["names"]


def ok(request: HttpRequest) -> HttpResponse:
    """A get_response for building the middleware directly."""
    return HttpResponse()


def pinned(response: HttpResponseBase, name: str = COOKIE) -> bool:
    """Whether the response sets the pin cookie."""
    return name in response.cookies


# Safe methods read from a replica, the others from the primary.


def test_a_get_reads_a_replica(browser):
    """A row written to the primary is not visible: the reads went to a replica."""
    response = browser.get("names")
    assert source(response) in REPLICAS
    assert MARKERS["default"] not in seen(response)
    assert not pinned(response)


def test_all_the_queries_of_a_request_use_the_same_replica(browser):
    """The replica is chosen once per request, not per query."""
    for _ in range(4):
        reads = sources(browser.get("names"))
        assert len(reads) == replica_views.QUERIES
        assert len(set(reads)) == 1, reads


def test_consecutive_requests_alternate_replicas(browser):
    """Round robin: each request reads the replica the previous one did not."""
    order = [source(browser.get("names")) for _ in range(4)]
    assert set(order) == set(REPLICAS)
    assert all(first != second for first, second in itertools.pairwise(order)), order


@pytest.mark.parametrize("method", ["options", "trace"])
def test_other_safe_methods_read_a_replica(browser, method):
    """OPTIONS and TRACE do not change anything either: a replica, no pin."""
    response = browser.request(method, "names")
    assert source(response) in REPLICAS
    assert not pinned(response)


def test_head_reads_a_replica_and_sets_no_cookie(browser):
    """HEAD is safe: no pin (its body, where the view reports, is dropped)."""
    response = browser.request("head", "names")
    assert response.status_code == 200
    assert not pinned(response)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_an_unsafe_method_reads_the_primary_and_pins(browser, method):
    """An unsafe request reads what the primary has, even when its view only reads."""
    response = browser.request(method, "names")
    assert source(response) == "default"
    assert pinned(response)


# The pin cookie.


@pytest.mark.parametrize("pin_seconds", [2, 7])
def test_the_pin_cookie_is_signed_and_lasts_pin_seconds(browser, pin_seconds):
    """The cookie's value is signed (not a bare "1" a client could set) and expires."""
    with routed(pin_seconds=pin_seconds):
        cookie = browser.post("names").cookies[COOKIE]
    assert cookie.value != "1"
    assert cookie.value.startswith("1:")
    assert cookie["max-age"] == pin_seconds


def test_the_pin_lasts_2_seconds_by_default(browser):
    """Without pin_seconds: the documented default, 2."""
    config = {key: value for key, value in CONFIG.items() if key != "pin_seconds"}
    with override_settings(DYNROUTE_PRIMARY_REPLICA=config):
        cookie = browser.post("names").cookies[COOKIE]
    assert cookie["max-age"] == 2


def test_the_pin_cookie_has_the_session_cookies_attributes_by_default(browser):
    """Without cookie_* keys: Django's defaults (HttpOnly, SameSite=Lax, path /)."""
    cookie = browser.post("names").cookies[COOKIE]
    assert cookie["secure"] == ""
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["domain"] == ""


SESSION_COOKIE = {
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": False,
    "SESSION_COOKIE_SAMESITE": "Strict",
    "SESSION_COOKIE_PATH": "/shop/",
    "SESSION_COOKIE_DOMAIN": ".example.com",
}


def test_the_pin_cookie_follows_the_session_cookie_settings(browser):
    """A site that made its session cookie Secure, Strict, etc. gets the same pin cookie."""
    with routed(settings=SESSION_COOKIE):
        cookie = browser.post("names").cookies[COOKIE]
    assert cookie["secure"] is True
    assert cookie["httponly"] == ""
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/shop/"
    assert cookie["domain"] == ".example.com"


def test_the_cookie_keys_override_the_session_cookie_settings(browser):
    """cookie_secure, cookie_httponly, cookie_samesite and cookie_name win."""
    with routed(
        settings=SESSION_COOKIE,
        cookie_secure=False,
        cookie_httponly=True,
        cookie_samesite="None",
        cookie_name="stick",
    ):
        response = browser.post("names")
        assert not pinned(response)
        cookie = response.cookies["stick"]
        assert source(browser.get("names")) == "default"
    assert cookie["secure"] == ""
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "None"
    assert cookie["path"] == "/shop/"
    assert cookie["domain"] == ".example.com"


# Reading one's own writes.


def test_by_position_the_cookie_carries_the_write_and_a_replica_that_has_it_is_read(browser):
    """pin="position": a position cookie (PostgreSQL, MariaDB), removed once replayed everywhere.

    The test "replicas" are databases of the primary's own server: they have every
    position it gives (tests/test_replica_positions.py has real replication). SQLite
    has no positions: a time pin.
    """
    with routed(pin="position"):
        response = browser.post("create", data={"name": "saved"})
        payload = response.cookies[COOKIE].value.rsplit(":", 2)[0]
        after = browser.get("names")
        if test_settings.BACKEND == "sqlite":
            assert payload == "1"
            assert source(after) == "default"
            assert not pinned(after)
            return
        assert payload.startswith("2.")
        assert set(middleware.unpack(payload[2:]) or ()) == {"default"}
        if browser.mode == "asgi":
            # .db asked in the event loop, before the entry's first read settled it,
            # says the primary (the query that settles runs in the ORM's thread).
            return
        assert source(after) in REPLICAS
        # Kept while a replica is not known to have replayed it (reading one that had
        # not, after dropping it, would be stale: GitLab's #413203), then dropped.
        assert not pinned(after)
        if browser.mode != "wsgi":
            return  # the views' thread has connections of its own: asked there
        for alias in REPLICAS:
            _positions.replayed(connections[alias])
        last = browser.get("names")
        assert source(last) in REPLICAS
        assert last.cookies[COOKIE]["max-age"] == 0


def test_after_a_post_the_clients_get_reads_the_primary(browser):
    """The redirect after a POST shows what was saved; without the cookie it would not."""
    assert pinned(browser.post("create", data={"name": "saved"}))
    response = browser.get("names")
    assert source(response) == "default"
    assert "saved" in seen(response)
    assert not pinned(response)

    browser.client.cookies.clear()
    response = browser.get("names")
    assert source(response) in REPLICAS
    assert "saved" not in seen(response)


def test_pins_are_reported_by_signal(browser):
    """reads_pinned: "write" for the POST that wrote, "cookie" for the GET that follows."""
    pins = []
    senders = set()

    def receiver(sender, primary, reason, **kwargs):
        pins.append((primary, reason))
        senders.add(sender)

    reads_pinned.connect(receiver)
    try:
        browser.post("create", data={"name": "saved"})
        assert pins == [("default", "write")]
        assert source(browser.get("names")) == "default"
        browser.client.cookies.clear()
        browser.get("names")
    finally:
        reads_pinned.disconnect(receiver)
    assert pins == [("default", "write"), ("default", "cookie")]
    assert senders == {PrimaryReplica}


def test_the_pin_is_per_client(browser, new_browser):
    """Another client (no cookie) still reads a replica."""
    assert pinned(browser.post("create", data={"name": "saved"}))
    assert source(browser.get("names")) == "default"
    assert source(new_browser().get("names")) in REPLICAS


def forged(valid: str) -> list[str]:
    """Values a client could send instead of a valid signed cookie."""
    value, stamp, signature = valid.split(":")
    other = "A" if signature[0] != "A" else "B"
    return [
        "1",
        f"{value}:{stamp}:{other}{signature[1:]}",  # the signature changed
        f"2:{stamp}:{signature}",  # the value changed
        signing.get_cookie_signer(salt=COOKIE).sign("1"),  # signed without the salt
        signing.TimestampSigner(key="guessed", salt=COOKIE).sign("1"),  # another key
    ]


def test_a_forged_cookie_is_ignored(browser, new_browser):
    """Only a cookie the middleware signed pins; a valid one does (the control)."""
    valid = browser.post("names").cookies[COOKIE].value
    for value in forged(valid):
        other = new_browser()
        other.client.cookies[COOKIE] = value
        assert source(other.get("names")) in REPLICAS, value
    other = new_browser()
    other.client.cookies[COOKIE] = valid
    assert source(other.get("names")) == "default"


def test_a_request_inside_another_replica_block_leaves_its_reads_as_they_were(browser):
    """A POST handled inside an enclosing PrimaryReplica block: primary reads, then none."""
    with in_database(policy=PrimaryReplica("default", REPLICAS)):
        assert source(browser.post("names")) == "default"
        assert Item.objects.all().db in REPLICAS  # the request's primary reads ended with it


def test_a_cookie_found_valid_is_not_checked_again(browser, new_browser, monkeypatch):
    """The signature of a client's pin cookie is checked once; its age on every request."""
    valid = browser.post("names").cookies[COOKIE].value
    assert source(browser.get("names")) == "default"  # checked, and remembered

    def refuse(*args: Any, **kwargs: Any) -> None:
        msg = "the signature was checked again"
        raise AssertionError(msg)

    monkeypatch.setattr(HttpRequest, "get_signed_cookie", refuse)
    other = new_browser()
    other.client.cookies[COOKIE] = valid
    assert source(other.get("names")) == "default"


def test_a_new_secret_key_forgets_the_cookies_found_valid(browser, new_browser):
    """After SECRET_KEY changes, a cookie signed with the old key no longer pins."""
    valid = browser.post("names").cookies[COOKIE].value
    assert source(browser.get("names")) == "default"
    with override_settings(SECRET_KEY="a-new-key-for-this-test-only-" + "x" * 30):
        other = new_browser()
        other.client.cookies[COOKIE] = valid
        assert source(other.get("names")) in REPLICAS


def test_a_key_dropped_from_the_fallbacks_no_longer_pins(browser, new_browser, settings):
    """A cookie found valid through SECRET_KEY_FALLBACKS is forgotten when they change."""
    valid = browser.post("names").cookies[COOKIE].value
    rotated = {"SECRET_KEY": "the-next-key-for-this-test-only-" + "x" * 30}
    with override_settings(**rotated, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        other = new_browser()
        other.client.cookies[COOKIE] = valid
        assert source(other.get("names")) == "default"  # the old key is a fallback
        with override_settings(SECRET_KEY_FALLBACKS=[]):
            assert source(other.get("names")) in REPLICAS


def test_the_cookies_found_valid_are_bounded_oldest_dropped_first(
    browser, new_browser, clock, monkeypatch
):
    """Past the bound, the oldest remembered cookie is dropped, then checked again."""
    monkeypatch.setattr(middleware, "_VERIFIED_MAX", 2)
    values = []
    for _ in range(3):
        values.append(browser.post("names").cookies[COOKIE].value)
        clock.now += 1  # each a new cookie (a new timestamp)
    clock.now -= 1  # all three within pin_seconds (2) of now
    for value in values:
        other = new_browser()
        other.client.cookies[COOKIE] = value
        assert source(other.get("names")) == "default"
    assert [key[1] for key in middleware._VERIFIED] == values[1:]


def test_expired_cookies_do_not_push_out_the_ones_found_valid(
    browser, new_browser, clock, monkeypatch
):
    """An expired cookie is refused without being remembered: it pushes out no live one."""
    monkeypatch.setattr(middleware, "_VERIFIED_MAX", 2)
    expired = []
    for _ in range(2):
        expired.append(browser.post("names").cookies[COOKIE].value)
        clock.now += 1
    clock.now += 5  # both older than pin_seconds (2)
    valid = browser.post("names").cookies[COOKIE].value
    assert source(browser.get("names")) == "default"  # checked, and remembered
    for value in expired:
        other = new_browser()
        other.client.cookies[COOKIE] = value
        assert source(other.get("names")) in REPLICAS

    def refuse(*args: Any, **kwargs: Any) -> None:
        msg = "the signature was checked again"
        raise AssertionError(msg)

    monkeypatch.setattr(HttpRequest, "get_signed_cookie", refuse)
    other = new_browser()
    other.client.cookies[COOKIE] = valid
    assert source(other.get("names")) == "default"


def test_the_pin_lasts_pin_seconds(browser, clock):
    """Within pin_seconds the cookie pins; after them it is ignored."""
    assert pinned(browser.post("names"))
    clock.now += 2
    assert source(browser.get("names")) == "default"
    clock.now += 1
    assert source(browser.get("names")) in REPLICAS


# Which requests pin.


def test_a_get_that_writes_pins(browser):
    """A GET whose view writes: its reads after the write, and the client's next ones."""
    response = browser.get("create", data={"name": "from a get"})
    assert source(response) == "default"
    assert "from a get" in seen(response)
    assert pinned(response)
    assert source(browser.get("names")) == "default"


def test_a_get_that_writes_with_using_pins(browser):
    """A write that names the primary with .using() is a write to the primary too."""
    response = browser.get("create-using", data={"name": "from a get"})
    assert Item.objects.using("default").filter(name="from a get").exists()
    assert pinned(response)
    assert source(browser.get("names")) == "default"


def test_a_get_that_only_reads_does_not_pin(browser):
    """No cookie after a read-only GET: the next request reads a replica again."""
    assert not pinned(browser.get("names"))
    assert source(browser.get("names")) in REPLICAS


@pytest.mark.parametrize(("method", "view"), [("post", "create"), ("get", "create")])
def test_pin_seconds_0_never_pins(browser, new_browser, method, view):
    """With pin_seconds 0 no cookie is set, and a valid one is not honoured.

    Not even in the second it was signed (the cookie's age is 0 on the frozen signing
    clock, which a max_age of 0 would still accept).
    """
    valid = browser.post("names").cookies[COOKIE].value
    with routed(pin_seconds=0):
        unpinned = new_browser()
        assert not pinned(unpinned.request(method, view, data={"name": "saved"}))
        unpinned.client.cookies[COOKIE] = valid
        assert source(unpinned.get("names")) in REPLICAS


# The resolver.


def test_a_resolver_sends_a_read_only_post_to_a_replica(browser):
    """The resolver's "replica" for a POST that only reads: a replica, and no pin."""
    with routed(resolver="tests.replica_views.by_header"):
        response = browser.post("names", headers={"X-Route": "replica"})
    assert source(response) in REPLICAS
    assert not pinned(response)


def test_a_post_sent_to_a_replica_that_writes_still_pins(browser):
    """The resolver's "replica" does not hide a write: the reads after it are pinned."""
    with routed(resolver="tests.replica_views.by_header"):
        response = browser.post("create", data={"name": "saved"}, headers={"X-Route": "replica"})
        assert source(response) == "default"
        assert pinned(response)
        assert Item.objects.using("default").filter(name="saved").exists()
        assert source(browser.get("names")) == "default"


def test_a_pinned_client_reads_the_primary_even_when_the_resolver_says_replica(browser):
    """The pin wins over "replica": the client just wrote."""
    with routed(resolver="tests.replica_views.by_header"):
        assert pinned(browser.post("names"))
        assert source(browser.get("names", headers={"X-Route": "replica"})) == "default"


def test_a_resolver_sends_a_get_to_the_primary(browser):
    """The resolver's "primary" for a GET: the primary; no pin (the GET did not write)."""
    with routed(resolver="tests.replica_views.by_header"):
        response = browser.get("names", headers={"X-Route": "primary"})
        assert source(response) == "default"
        assert not pinned(response)


@pytest.mark.parametrize(("method", "where_to"), [("get", REPLICAS), ("post", ("default",))])
def test_a_resolver_returning_none_keeps_the_rules(browser, method, where_to):
    """None: GET reads a replica, POST the primary."""
    with routed(resolver="tests.replica_views.by_header"):
        response = browser.request(method, "names")
    assert source(response) in where_to
    assert pinned(response) is (method == "post")


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_resolver_returning_anything_else_is_a_usage_error(browser, method):
    """The message names the value, the request, and what to return."""
    with (
        routed(resolver="tests.replica_views.by_header"),
        pytest.raises(UsageError, match=r"'bogus' for (GET|POST) /a?names/.*'primary'"),
    ):
        browser.request(method, "names", headers={"X-Route": "bogus"})


@pytest.mark.parametrize(
    ("header", "method", "where_to"),
    [
        ("replica", "post", REPLICAS),
        ("primary", "get", ("default",)),
        (None, "get", REPLICAS),
        (None, "post", ("default",)),
    ],
)
def test_an_async_resolver_is_awaited_under_asgi(loop, header, method, where_to):
    """A coroutine function as resolver: the async middleware awaits its answer."""
    browser = Browser("asgi", loop, ASYNC_VARIANTS)
    headers = {} if header is None else {"X-Route": header}
    with routed(resolver="tests.replica_views.by_header_async"):
        response = browser.request(method, "names", headers=headers)
        assert source(response) in where_to
        with pytest.raises(UsageError, match="'bogus'"):
            browser.get("names", headers={"X-Route": "bogus"})


def test_an_async_resolver_under_wsgi_is_a_usage_error(loop):
    """A sync middleware chain cannot await the resolver: the message says to use ASGI."""
    browser = Browser("wsgi", loop, ASYNC_VARIANTS)
    with (
        routed(resolver="tests.replica_views.by_header_async"),
        pytest.raises(UsageError) as raised,
    ):
        browser.get("names")
    assert str(raised.value) == (
        "The resolver of settings.DYNROUTE_PRIMARY_REPLICA is a coroutine function, which "
        "needs an async middleware chain (ASGI): make it a plain function under WSGI."
    )


def test_the_primary_defaults_to_default_and_down_seconds_is_read():
    """Keys left out take their defaults; the ones given reach the policy."""
    with override_settings(DYNROUTE_PRIMARY_REPLICA={"replicas": list(REPLICAS)}):
        middleware = PrimaryReplicaMiddleware(lambda _request: HttpResponse())
    assert middleware.policy.primary == "default"
    assert middleware.policy.down_seconds == 30
    config = {**CONFIG, "primary": "replica2", "replicas": ["replica1"], "down_seconds": 5}
    with override_settings(DYNROUTE_PRIMARY_REPLICA=config):
        middleware = PrimaryReplicaMiddleware(lambda _request: HttpResponse())
    assert middleware.policy.primary == "replica2"
    assert middleware.policy.down_seconds == 5


@pytest.mark.parametrize(
    ("body", "where_to", "pins"),
    [("{ items { name } }", REPLICAS, False), ("mutation { add }", ("default",), True)],
)
def test_a_graphql_resolver(browser, body, where_to, pins):
    """The issue's case: GraphQL queries are POSTs that read; mutations are not."""
    with routed(resolver="tests.replica_views.graphql"):
        response = browser.post("graphql", data=body, content_type="application/graphql")
    assert source(response) in where_to
    assert pinned(response) is pins


# @use_primary.


def test_use_primary_on_a_view_reads_the_primary(browser):
    """A view that must not lag: the primary, even for a GET; a read does not pin."""
    response = browser.get("primary")
    assert source(response) == "default"
    assert not pinned(response)
    assert source(browser.get("names")) in REPLICAS


# Streaming responses.

STREAMING_MODES = MODES


@pytest.fixture(params=STREAMING_MODES)
def streamer(request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Browser:
    """A client for the streaming views: sync iterators (WSGI, ASGI) and async ones (ASGI)."""
    return Browser(request.param, loop, ASYNC_VARIANTS)


def view_read(response: Any) -> str:
    """Where the read the streaming view made before returning went."""
    return where(json.loads(response["X-View-Read"]))


def test_a_stream_reads_the_replica_its_request_used(streamer):
    """Each chunk's query, run after the middleware returned, reads the request's replica."""
    for _ in range(3):  # round robin: a chunk that chose a replica anew would differ
        response = streamer.get("stream")
        assert response.streaming
        replica = view_read(response)
        assert replica in REPLICAS
        chunks = [where(read) for read in streamer.chunks(response)]
        assert chunks == [replica] * replica_views.CHUNKS


def test_interleaved_streams_each_read_their_own_replica(streamer):
    """Two responses iterated in turn: every chunk reads its own request's replica."""
    first, second = streamer.get("stream"), streamer.get("stream")
    replicas = [view_read(first), view_read(second)]
    assert sorted(replicas) == sorted(REPLICAS)
    if first.is_async:
        iterators = [aiter(first.streaming_content), aiter(second.streaming_content)]
        step = lambda iterator: streamer.loop.run_until_complete(anext(iterator))  # noqa: E731
    else:
        iterators = [iter(first.streaming_content), iter(second.streaming_content)]
        step = next
    for _ in range(replica_views.CHUNKS):
        for iterator, replica in zip(iterators, replicas, strict=True):
            assert where(json.loads(step(iterator))) == replica
    for response in (first, second):
        assert streamer.chunks(response) == []


def test_a_stream_abandoned_after_a_chunk_leaves_no_route(streamer):
    """A client that goes away mid-stream: no route is left active.

    The leak guard checks that no route is active after the test; the next request
    reads a replica.
    """
    response = streamer.get("stream")
    if response.is_async:
        iterator = aiter(response.streaming_content)
        first = streamer.loop.run_until_complete(anext(iterator))
        streamer.loop.run_until_complete(iterator.aclose())
    else:
        first = next(iter(response.streaming_content))
    response.close()
    assert where(json.loads(first)) in REPLICAS
    assert source(streamer.get("names")) in REPLICAS


def test_a_stream_after_a_pin_reads_the_primary(streamer):
    """The pinned client's streamed rows include what it just saved."""
    assert pinned(streamer.post("create", data={"name": "saved"}))
    response = streamer.get("stream")
    reads = streamer.chunks(response)
    assert [where(read) for read in reads] == ["default"] * replica_views.CHUNKS
    assert all("saved" in read["names"] for read in reads)


def test_a_posts_stream_reads_the_primary(streamer):
    """An unsafe request read from the primary: so does its stream."""
    response = streamer.post("stream")
    assert view_read(response) == "default"
    assert [where(read) for read in streamer.chunks(response)] == ["default"] * 3
    assert pinned(response)


def test_the_stream_of_a_get_that_wrote_reads_the_primary(streamer):
    """The view wrote before returning: the stream reads after the write."""
    response = streamer.get("stream", data={"name": "saved"})
    reads = streamer.chunks(response)
    assert [where(read) for read in reads] == ["default"] * replica_views.CHUNKS
    assert all("saved" in read["names"] for read in reads)
    assert pinned(response)


def test_the_stream_of_a_get_the_resolver_sent_to_the_primary_reads_it(streamer):
    """The resolver's "primary" holds for the stream too."""
    with routed(resolver="tests.replica_views.by_header"):
        response = streamer.get("stream", headers={"X-Route": "primary"})
    assert [where(read) for read in streamer.chunks(response)] == ["default"] * 3


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_streams_writes_go_to_the_primary(streamer, method):
    """Writes made while a response is streamed go to the primary, wherever it reads.

    The primary is not "default" here: a write that no block routes goes there anyway.
    """
    with routed(primary="replica2", replicas=["replica1"]):
        response = streamer.request(method, "stream-writes")
        created = [chunk["created"] for chunk in streamer.chunks(response)]
    assert len(created) == replica_views.CHUNKS
    for alias, count in [("replica2", replica_views.CHUNKS), ("default", 0), ("replica1", 0)]:
        assert Item.objects.using(alias).filter(name__in=created).count() == count, alias


def test_the_stream_of_a_use_primary_view_reads_the_primary(streamer):
    """The view read from the primary: its stream does too (after the decorator's scope)."""
    response = streamer.get("primary-stream")
    assert view_read(response) == "default"
    assert [where(read) for read in streamer.chunks(response)] == ["default"] * 3
    assert not pinned(response)
    assert where(streamer.chunks(streamer.get("stream"))[0]) in REPLICAS


# Sync and async without a thread hop.


def test_the_middleware_is_async_when_its_get_response_is():
    """Django then calls it in the event loop, without a sync_to_async hop."""

    async def get_response_async(request):
        return HttpResponse()

    assert iscoroutinefunction(PrimaryReplicaMiddleware(get_response_async))
    assert not iscoroutinefunction(PrimaryReplicaMiddleware(ok))
    assert PrimaryReplicaMiddleware.sync_capable
    assert PrimaryReplicaMiddleware.async_capable


def test_an_async_view_runs_in_the_middlewares_thread(loop):
    """Under ASGI the middleware (its resolver) and the async view share the loop's thread."""
    browser = Browser("asgi", loop, ASYNC_VARIANTS)
    with routed(resolver="tests.replica_views.by_header"):
        answer = browser.get("names").json()
    assert answer["resolver_thread"] == answer["view_thread"] == threading.get_ident()


def test_a_sync_view_under_wsgi_runs_in_the_middlewares_thread(loop):
    """Under WSGI everything is in the request's thread."""
    browser = Browser("wsgi", loop, ASYNC_VARIANTS)
    with routed(resolver="tests.replica_views.by_header"):
        answer = browser.get("names").json()
    assert answer["resolver_thread"] == answer["view_thread"] == threading.get_ident()


# Configuration errors.


def bad(message: str, id_: str, **changes: Any) -> Any:
    """A case: CONFIG with ``changes``, the message it must raise (a regex)."""
    return pytest.param({**CONFIG, **changes}, message, id=id_)


PIN_SECONDS = r'\["pin_seconds"\] must be .*>= 0, got '
RESOLVER = "settings.DYNROUTE_PRIMARY_REPLICA\\['resolver'\\] = "


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            ["replica1"],
            r'needs settings.DYNROUTE_PRIMARY_REPLICA, a dict such as \{"primary".*got list',
            id="not a dict",
        ),
        pytest.param({"primary": "default"}, r'needs "replicas"', id="no replicas"),
        bad(r"unknown key\(s\) replica\. Known keys: .*replicas: ", "unknown key", replica=[]),
        bad(r"unknown key\(s\) pin_second\..*pin_seconds: ", "misspelt key", pin_second=2),
        bad(
            RESOLVER + "'tests.replica_views.missing' cannot be imported",
            "resolver missing",
            resolver="tests.replica_views.missing",
        ),
        bad(RESOLVER + "'nowhere' cannot be imported", "resolver not a path", resolver="nowhere"),
        bad(
            r'\["resolver"\] must be a function, got 42',
            "resolver not callable",
            resolver="tests.replica_views.NOT_A_FUNCTION",
        ),
        bad(r'\["resolver"\] must be a function, got 42', "resolver an int", resolver=42),
        bad(PIN_SECONDS + r"-1\.", "pin_seconds -1", pin_seconds=-1),
        bad(PIN_SECONDS + r"'2'\.", "pin_seconds str", pin_seconds="2"),
        bad(PIN_SECONDS + r"None\.", "pin_seconds None", pin_seconds=None),
        bad(PIN_SECONDS + r"True\.", "pin_seconds bool", pin_seconds=True),
        bad(PIN_SECONDS + r"0\.5\.", "pin_seconds 0.5", pin_seconds=0.5),
        bad(PIN_SECONDS + r"nan\.", "pin_seconds nan", pin_seconds=float("nan")),
    ],
)
def test_a_bad_configuration_is_a_configuration_error(config, message):
    """Raised when the middleware is built, naming the key or value and the fix."""
    with (
        override_settings(DYNROUTE_PRIMARY_REPLICA=config),
        pytest.raises(ConfigurationError, match=message),
    ):
        PrimaryReplicaMiddleware(ok)


def test_unknown_keys_are_named_then_every_known_key_with_its_meaning():
    """The unknown keys, sorted; then each known key and what it means."""
    config = {**CONFIG, "replica": [], "pin_second": 2}
    with (
        override_settings(DYNROUTE_PRIMARY_REPLICA=config),
        pytest.raises(ConfigurationError) as raised,
    ):
        PrimaryReplicaMiddleware(ok)
    unknown, known = str(raised.value).split(" Known keys: ")
    assert unknown == "settings.DYNROUTE_PRIMARY_REPLICA has unknown key(s) pin_second, replica."
    entries = known.removesuffix(".").split("; ")
    assert [entry.split(": ")[0] for entry in entries] == [
        "primary",
        "replicas",
        "pin_seconds",
        "pin",
        "position_seconds",
        "max_lag",
        "lag_check_seconds",
        "choose",
        "down_seconds",
        "resolver",
        "cookie_name",
        "cookie_secure",
        "cookie_httponly",
        "cookie_samesite",
    ]
    assert (
        entries[2]
        == "pin_seconds: seconds a client reads from the primary after it wrote, pinned by time "
        "(default 2, and 0 sets no pin cookie)"
    )


def test_a_missing_setting_is_a_configuration_error(settings):
    """The message shows what the setting looks like."""
    del settings.DYNROUTE_PRIMARY_REPLICA
    example = r'a dict such as \{"primary": "default", "replicas": \["replica1"\]\}'
    with pytest.raises(
        ConfigurationError,
        match=f"needs settings.DYNROUTE_PRIMARY_REPLICA, {example}; got NoneType",
    ):
        PrimaryReplicaMiddleware(ok)


def test_a_bad_replicas_value_is_a_usage_error():
    """As PrimaryReplica says: one alias given as a string."""
    with (
        override_settings(DYNROUTE_PRIMARY_REPLICA={**CONFIG, "replicas": "replica1"}),
        pytest.raises(UsageError, match=r"write replicas=\('replica1',\)"),
    ):
        PrimaryReplicaMiddleware(ok)


@pytest.mark.parametrize("choose", ["round_robin", "random"])
def test_choose_by_name(loop, choose):
    """The documented names of the replica choices are accepted."""
    with routed(choose=choose):
        assert source(Browser("wsgi", loop, ASYNC_VARIANTS).get("names")) in REPLICAS


def test_choose_by_dotted_path(browser):
    """A function named by its dotted path chooses the replica."""
    with routed(choose="tests.test_replica_middleware.last_replica"):
        assert [source(browser.get("names")) for _ in range(3)] == ["replica2"] * 3


def last_replica(replicas: tuple[str, ...]) -> str:
    """A ``choose`` function: always the last replica that is up."""
    return replicas[-1]


# Inside a test's transaction.


@pytest.mark.django_db(databases=DATABASES, transaction=False)
def test_inside_a_test_transaction_a_get_reads_the_primary(loop):
    """What users of Django's TestCase see: reads go to the primary.

    The primary is in the test's transaction, and a replica would not see its
    uncommitted rows. Use transaction=True (TransactionTestCase) to test the routing.
    """
    response = Browser("wsgi", loop, ASYNC_VARIANTS).get("names")
    assert source(response) == "default"
    assert not pinned(response)


# Concurrency.


@pytest.mark.parametrize("writer", ["post", "get"])
def test_concurrent_requests_keep_their_own_routing(loop, writer):
    """50 concurrent ASGI requests through one middleware keep their own routing.

    25 write (POSTs, or GETs whose view writes), 25 only read. Every writer reads its
    own write and pins its client; no reader reads the primary or gets a pin.
    """
    shared = AsyncClient().handler

    def client() -> AsyncClient:
        made = AsyncClient()
        made.handler = shared
        return made

    async def write(index: int) -> tuple[str, Any]:
        name = f"written {index}"
        request = client().post if writer == "post" else client().get
        return name, await request("/acreate/", data={"name": name})

    async def read() -> tuple[None, Any]:
        return None, await client().get("/anames/")

    async def main() -> list[tuple[str | None, Any]]:
        await client().get("/anames/")  # builds the middleware chain
        requests = [write(index) if index % 2 else read() for index in range(50)]
        return await asyncio.gather(*requests)

    results = loop.run_until_complete(main())
    for name, response in results:
        if name is None:
            assert source(response) in REPLICAS
            assert not pinned(response)
        else:
            assert source(response) == "default"
            assert name in seen(response)
            assert pinned(response)
    assert Item.objects.using("default").count() == 1 + 25


def test_concurrent_wsgi_threads_keep_their_own_routing():
    """8 threads through one middleware, each writing then reading, or only reading."""
    warm = Client()
    assert source(warm.get("/names/")) in REPLICAS  # builds the middleware chain
    shared = warm.handler
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        from django.db import connections  # noqa: PLC0415

        try:
            made = Client()
            made.handler = shared
            barrier.wait()
            for turn in range(5):
                if index % 2:
                    name = f"written {index}.{turn}"
                    response = made.post("/create/", data={"name": name})
                    if source(response) != "default" or name not in seen(response):
                        errors.append(f"{name}: {response.json()}")
                    if source(made.get("/names/")) != "default":
                        errors.append(f"{name}: the next GET did not read the primary")
                elif source(made.get("/names/")) not in REPLICAS or made.cookies:
                    errors.append(f"reader {index}: read the primary or got a pin")
        except Exception as error:
            errors.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_the_position_and_lag_keys_reach_the_policy():
    """pin, max_lag and lag_check_seconds go to the policy; by default: position, none, 5 s."""
    unset = {key: value for key, value in CONFIG.items() if key != "pin"}
    with override_settings(DYNROUTE_PRIMARY_REPLICA=unset):
        default = PrimaryReplicaMiddleware(ok).policy
    assert (default.pin, default.max_lag, default.lag_check_seconds) == ("position", None, 5.0)
    given = {"pin": "time", "max_lag": 2, "lag_check_seconds": 0.5, "position_seconds": 60}
    with override_settings(DYNROUTE_PRIMARY_REPLICA={**unset, **given}):
        middleware_ = PrimaryReplicaMiddleware(ok)
    assert (middleware_.policy.pin, middleware_.policy.max_lag) == ("time", 2.0)
    assert middleware_.policy.lag_check_seconds == 0.5
    assert middleware_.settings.position_seconds == 60
