"""Views, resolvers and URLs for tests/test_replica_middleware.py.

Every view answers where its reads went twice over: the alias the router gave
(``Item.objects.all().db``) and the names of the items the query returned. The test
databases hold a different marker row each (see the test module), so the names show
which database a query really reached.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

import dynroute
from tests.browsing import aread, read
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

#: How many queries a view makes (each one is reported).
QUERIES = 3
#: How many chunks a streaming view yields (each one from a query of its own).
CHUNKS = 3


def answer(request: HttpRequest, reads: list[dict[str, Any]]) -> JsonResponse:
    """The reads, and the threads the view and the resolver (if any) ran in."""
    return JsonResponse(
        {
            "reads": reads,
            "view_thread": threading.get_ident(),
            "resolver_thread": getattr(request, "resolver_thread", None),
        }
    )


def name_of(request: HttpRequest) -> str:
    """The name of the item to create, from the query string or the form."""
    return request.GET.get("name") or request.POST["name"]


def names(request: HttpRequest) -> JsonResponse:
    """Read :data:`QUERIES` times (any method)."""
    return answer(request, [read() for _ in range(QUERIES)])


async def anames(request: HttpRequest) -> JsonResponse:
    """As :func:`names`, async, letting other tasks run between the queries."""
    reads = []
    for _ in range(QUERIES):
        reads.append(await aread())
        await asyncio.sleep(0)
    return answer(request, reads)


def create(request: HttpRequest) -> JsonResponse:
    """Create an item named by the request (whatever its method), then read."""
    Item.objects.create(name=name_of(request))
    return answer(request, [read()])


def create_using(request: HttpRequest) -> JsonResponse:
    """As :func:`create`, naming the primary with ``.using("default")``."""
    Item.objects.using("default").create(name=name_of(request))
    return answer(request, [read()])


async def acreate_using(request: HttpRequest) -> JsonResponse:
    """As :func:`create_using`, async."""
    await Item.objects.using("default").acreate(name=name_of(request))
    return answer(request, [await aread()])


async def acreate(request: HttpRequest) -> JsonResponse:
    """As :func:`create`, async, letting other tasks run between the write and the read."""
    await Item.objects.acreate(name=name_of(request))
    await asyncio.sleep(0)
    return answer(request, [await aread()])


@dynroute.use_primary
def primary(request: HttpRequest) -> JsonResponse:
    """Read, with ``@use_primary``."""
    return answer(request, [read()])


@dynroute.use_primary
async def aprimary(request: HttpRequest) -> JsonResponse:
    """As :func:`primary`, async."""
    return answer(request, [await aread()])


def _chunks() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield json.dumps(read()).encode() + b"\n"


async def _achunks() -> AsyncIterator[bytes]:
    for _ in range(CHUNKS):
        yield json.dumps(await aread()).encode() + b"\n"
        await asyncio.sleep(0)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Stream :data:`CHUNKS` reads made while the response is iterated.

    ``?name=`` creates that item first. The header ``X-View-Read`` is the read the view
    made before returning, for comparison.
    """
    if "name" in request.GET:
        Item.objects.create(name=request.GET["name"])
    response = StreamingHttpResponse(_chunks(), content_type="application/x-ndjson")
    response["X-View-Read"] = json.dumps(read())
    return response


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    """As :func:`stream`, async, with an async iterator."""
    if "name" in request.GET:
        await Item.objects.acreate(name=request.GET["name"])
    response = StreamingHttpResponse(_achunks(), content_type="application/x-ndjson")
    response["X-View-Read"] = json.dumps(await aread())
    return response


def _writes() -> Iterator[bytes]:
    for number in range(CHUNKS):
        name = f"streamed {number}"
        Item.objects.create(name=name)
        yield json.dumps({"created": name}).encode() + b"\n"


async def _awrites() -> AsyncIterator[bytes]:
    for number in range(CHUNKS):
        name = f"streamed {number}"
        await Item.objects.acreate(name=name)
        yield json.dumps({"created": name}).encode() + b"\n"


def stream_writes(request: HttpRequest) -> StreamingHttpResponse:
    """Stream :data:`CHUNKS` writes made while the response is iterated (any method)."""
    return StreamingHttpResponse(_writes(), content_type="application/x-ndjson")


async def astream_writes(request: HttpRequest) -> StreamingHttpResponse:
    """As :func:`stream_writes`, async, with an async iterator."""
    return StreamingHttpResponse(_awrites(), content_type="application/x-ndjson")


@dynroute.use_primary
def primary_stream(request: HttpRequest) -> StreamingHttpResponse:
    """As :func:`stream`, with ``@use_primary``."""
    return stream(request)


@dynroute.use_primary
async def aprimary_stream(request: HttpRequest) -> StreamingHttpResponse:
    """As :func:`astream`, with ``@use_primary``."""
    return await astream(request)


def by_header(request: HttpRequest) -> object:
    """A resolver: whatever the request's ``X-Route`` header says (``None`` without one)."""
    request.resolver_thread = threading.get_ident()  # type: ignore[attr-defined]
    return request.headers.get("X-Route")


async def by_header_async(request: HttpRequest) -> object:
    """As :func:`by_header`, a coroutine function (the async middleware awaits it)."""
    await asyncio.sleep(0)
    return by_header(request)


def graphql(request: HttpRequest) -> str | None:
    """A resolver as a project would write it: GraphQL queries are POSTs that only read."""
    if request.path == "/graphql/" and b"mutation" not in request.body:
        return "replica"
    return None


NOT_A_FUNCTION = 42

urlpatterns = [
    path("names/", names),
    path("anames/", anames),
    path("graphql/", names),
    path("create/", create),
    path("acreate/", acreate),
    path("create-using/", create_using),
    path("acreate-using/", acreate_using),
    path("primary/", primary),
    path("aprimary/", aprimary),
    path("stream/", stream),
    path("astream/", astream),
    path("stream-writes/", stream_writes),
    path("astream-writes/", astream_writes),
    path("primary-stream/", primary_stream),
    path("aprimary-stream/", aprimary_stream),
]
