"""Exceptions that pass through the request middlewares: unchanged, and nothing left behind.

They do when Django does not turn them into a 500 (a middleware called directly,
``DEBUG_PROPAGATE_EXCEPTIONS``, a server's own handling, a streaming response's chunk).
The exception is the view's, unchanged; the autouse leak check (conftest.py) proves the
rest: no route, write prevention, pin, route lock or runtime alias outlives a test.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from django.test import RequestFactory, override_settings

from dynroute import current_route
from dynroute.middleware import DatabaseMiddleware, PrimaryReplicaMiddleware
from dynroute.runtime import active_aliases
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

pytestmark = [
    pytest.mark.django_db(databases=["default", "other", "replica1", "replica2"], transaction=True),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

REPLICAS = {"primary": "default", "replicas": ["replica1", "replica2"]}


class ViewError(Exception):
    """What the view raises."""


def route_of(request: HttpRequest) -> object:
    """The resolver of these tests: what the test put on the request."""
    return getattr(request, "route", None)


def served(*, lock: bool = False) -> override_settings:
    """The middlewares' settings: the replicas, and route_of as the tenant resolver."""
    return override_settings(
        DYNROUTE_PRIMARY_REPLICA=REPLICAS,
        DYNROUTE_REQUEST_ROUTE=f"{__name__}.route_of",
        DYNROUTE_REQUEST_LOCK=lock,
    )


def request_for(route: object = None, method: str = "post") -> HttpRequest:
    """A request whose tenant route is ``route``."""
    request: Any = getattr(RequestFactory(), method)("/")
    request.route = route
    return request


def failing_view(seen: list[object]) -> Callable[[HttpRequest], Any]:
    """A view that writes, notes where its block routes, then raises."""

    def view(request: HttpRequest) -> Any:
        Item.objects.create(name="written before the failure")
        seen.append(current_route())
        raise ViewError

    return view


def chain(view: Callable[[HttpRequest], Any], *, asynchronous: bool) -> Callable[..., Any]:
    """PrimaryReplicaMiddleware around DatabaseMiddleware around ``view``, sync or async."""
    if asynchronous:
        sync_view = view

        async def view(request: HttpRequest) -> Any:
            return await sync_to_async(sync_view)(request)

    return PrimaryReplicaMiddleware(DatabaseMiddleware(view))


def call(middleware: Callable[..., Any], request: HttpRequest) -> Any:
    """Call a middleware as its handler would: awaited when it is async."""
    answer = middleware(request)
    if asyncio.iscoroutine(answer):
        return asyncio.run(answer)
    return answer


@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
@pytest.mark.parametrize("lock", [False, True], ids=["unlocked", "locked"])
def test_an_exception_from_the_view_passes_through_both_middlewares(asynchronous, lock):
    """The view's own exception reaches the caller, after both blocks and the lock are left."""
    seen: list[object] = []
    with served(lock=lock):
        middleware = chain(failing_view(seen), asynchronous=asynchronous)
        with pytest.raises(ViewError):
            call(middleware, request_for("other"))
    [route] = seen
    assert route is not None
    assert route.alias == "other"  # the tenant's block was the view's
    assert Item.objects.using("other").filter(name="written before the failure").exists()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
def test_an_exception_leaves_no_runtime_configuration_registered(asynchronous, runtime):
    """A tenant's runtime configuration is torn down when its request fails."""
    seen: list[object] = []
    with served():
        middleware = chain(failing_view(seen), asynchronous=asynchronous)
        with pytest.raises(ViewError):
            call(middleware, request_for(dict(runtime)))
    assert seen
    assert not active_aliases()


def test_an_exception_from_the_resolver_passes_through_before_any_block():
    """A resolver that raises: its exception, and no block was ever entered."""

    def view(request: HttpRequest) -> Any:  # pragma: no cover - never reached
        raise AssertionError

    with served():
        middleware = chain(view, asynchronous=False)
        request = request_for()
        request.route = property(lambda _: None)  # not a target: refused
        with pytest.raises(Exception, match="it must return an alias, a settings dict"):
            call(middleware, request)


def streaming_view(chunks: Iterator[bytes] | AsyncIterator[bytes]) -> Callable[..., Any]:
    """A view returning ``chunks`` as a streaming response."""

    def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(chunks)

    return view


def failing_chunks(reads: list[str]) -> Iterator[bytes]:
    """One chunk from a read, then the failure."""
    reads.append(Item.objects.all().db)
    yield b"first"
    raise ViewError


async def afailing_chunks(reads: list[str]) -> AsyncIterator[bytes]:
    """As :func:`failing_chunks`, as an async iterator."""
    reads.append(Item.objects.all().db)  # the router's answer only: no query runs
    yield b"first"
    raise ViewError


def test_an_exception_while_streaming_reaches_the_server_and_leaves_no_block():
    """A chunk that raises, after the middlewares returned: the consumer gets it, unchanged."""
    reads: list[str] = []
    with served():
        middleware = chain(streaming_view(failing_chunks(reads)), asynchronous=False)
        response = call(middleware, request_for("other", method="get"))
    content = iter(response.streaming_content)
    assert next(content) == b"first"
    with pytest.raises(ViewError):
        next(content)
    assert reads == ["other"]  # produced inside the tenant's block
    assert current_route() is None


def test_an_exception_while_streaming_asynchronously_leaves_no_block():
    """The same with an async iterator, under ASGI."""
    reads: list[str] = []
    with served():
        middleware = chain(streaming_view(afailing_chunks(reads)), asynchronous=True)
        response = call(middleware, request_for("other", method="get"))

    async def consume() -> None:
        content = aiter(response.streaming_content)
        assert await anext(content) == b"first"
        with pytest.raises(ViewError):
            await anext(content)

    asyncio.run(consume())
    assert reads == ["other"]
    assert current_route() is None
