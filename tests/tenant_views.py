"""Views, resolvers and URLs for tests/test_database_middleware.py.

A tenant is picked by ``?tenant=N``: tenant N's database is ``TENANT_DATABASES[N %
3]``. Every view reports where its reads went twice over: the alias the router gave
and the marker row the query returned (each database holds its own).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

import dynroute
from tests.browsing import aread, read
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator, Iterator

TENANT_DATABASES = ("other", "replica1", "replica2")
#: How many chunks a streaming view yields (each one from a query of its own).
CHUNKS = 3
#: The settings dict a "config" tenant gets (set by the test that uses it).
RUNTIME: dict[str, Any] = {}


def tenant_database(request: HttpRequest) -> object:
    """The resolver: the tenant's alias, a settings dict, None, or an error."""
    tenant = request.GET.get("tenant")
    if tenant is None:
        return None
    if tenant == "boom":
        msg = "the resolver failed"
        raise LookupError(msg)
    if tenant == "config":
        return dict(RUNTIME)
    if tenant == "policy":
        return dynroute.ReadOnly("replica1")
    if tenant == "block":
        return dynroute.in_database("replica2")  # reads only: its own flags
    if tenant in CUSTOM_POLICIES:
        return CUSTOM_POLICIES[tenant]()
    return TENANT_DATABASES[int(tenant) % len(TENANT_DATABASES)]


def named_tenant(request: HttpRequest) -> object:
    """The resolver as a directory user writes it: the tenant's ``DatabaseAlias``."""
    return dynroute.DatabaseAlias(str(tenant_database(request)))


async def atenant_database(request: HttpRequest) -> object:
    """The resolver as a coroutine function (ASGI)."""
    await asyncio.sleep(0)
    return tenant_database(request)


def deferred_tenant_database(request: HttpRequest) -> object:
    """A resolver answering with an awaitable that is not a coroutine (it has no close())."""
    return Deferred(tenant_database(request))


class Deferred:
    """An answer to await: the target, once awaited."""

    def __init__(self, target: object) -> None:
        self.target = target

    def __await__(self) -> Generator[None, None, object]:
        yield from ()
        return self.target


class TenantResolver:
    """A resolver that is an object, not a function (it has no ``__qualname__``)."""

    def __call__(self, request: HttpRequest) -> object:
        return tenant_database(request)


resolver_object = TenantResolver()


class Anywhere:
    """A custom policy with no single database: it has no opinion."""

    def db_for_read(self, model: object, /, **hints: object) -> str | None:
        return None

    def db_for_write(self, model: object, /, **hints: object) -> str | None:
        return None


class ReadsOnly:
    """Half a policy: db_for_read without db_for_write."""

    def db_for_read(self, model: object, /, **hints: object) -> str | None:
        return "replica1"


#: What the resolver returns for these tenants: a new object of the class.
CUSTOM_POLICIES: dict[str, type[Anywhere | ReadsOnly]] = {
    "policy-any": Anywhere,
    "half-policy": ReadsOnly,
}


def reads(request: HttpRequest) -> JsonResponse:
    """Read; with ``?name=``, create that item first (a write)."""
    if "name" in request.GET:
        Item.objects.create(name=request.GET["name"])
    return JsonResponse({"reads": [read()], "write_db": dynroute.current_alias(Item, write=True)})


async def areads(request: HttpRequest) -> JsonResponse:
    """As :func:`reads`, async."""
    if "name" in request.GET:
        await Item.objects.acreate(name=request.GET["name"])
    return JsonResponse(
        {"reads": [await aread()], "write_db": dynroute.current_alias(Item, write=True)}
    )


def _chunks() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield JsonResponse(read()).content + b"\n"


async def _achunks() -> AsyncIterator[bytes]:
    for _ in range(CHUNKS):
        yield JsonResponse(await aread()).content + b"\n"


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream :data:`CHUNKS` reads made while the response is iterated."""
    return StreamingHttpResponse(_chunks(), content_type="application/x-ndjson")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    """As :func:`stream`, async, with an async iterator."""
    return StreamingHttpResponse(_achunks(), content_type="application/x-ndjson")


def elsewhere(request: HttpRequest) -> JsonResponse:
    """Read the primary's rows in a block of its own; ``?unlocked`` inside unlocked().

    ``?same``: a block on the request's own database instead.
    """
    if "same" in request.GET:
        route = dynroute.current_route()
        with dynroute.in_database(route.alias if route else "default", write=True):
            return JsonResponse({"reads": [read()]})
    if "unlocked" in request.GET:
        with dynroute.unlocked(), dynroute.in_database("default"):
            return JsonResponse({"reads": [read()]})
    with dynroute.in_database("default"):
        return JsonResponse({"reads": [read()]})


async def aelsewhere(request: HttpRequest) -> JsonResponse:
    """As :func:`elsewhere`, async."""
    if "same" in request.GET:
        route = dynroute.current_route()
        async with dynroute.in_database(route.alias if route else "default", write=True):
            return JsonResponse({"reads": [await aread()]})
    if "unlocked" in request.GET:
        async with dynroute.unlocked(), dynroute.in_database("default"):
            return JsonResponse({"reads": [await aread()]})
    async with dynroute.in_database("default"):
        return JsonResponse({"reads": [await aread()]})


urlpatterns = [
    path("reads/", reads),
    path("areads/", areads),
    path("stream/", stream),
    path("astream/", astream),
    path("elsewhere/", elsewhere),
    path("aelsewhere/", aelsewhere),
]
