"""The async views (uvicorn): the same as :mod:`loadsite.views`, with the async ORM."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from django.http import JsonResponse
from django.views.decorators.http import require_GET, require_POST

from loadsite.models import Marker, Note
from loadsite.queries import on_tenant, shared_reads, shared_writes, tenant
from loadsite.views import answer

if TYPE_CHECKING:
    from django.http import HttpRequest


async def health(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - a view
    """Answer without touching a database: the server is up."""
    return JsonResponse({"pid": os.getpid()})


@require_GET
async def tenant_read(request: HttpRequest) -> JsonResponse:
    """The tenant's marker and this user's latest notes."""
    notes = on_tenant(Note.objects, request).filter(user=request.GET["user"])
    latest = [body async for body in notes.order_by("-id").values_list("body", flat=True)[:5]]
    return answer(await on_tenant(Marker.objects, request).aget(), count=len(latest))


@require_POST
async def tenant_write(request: HttpRequest) -> JsonResponse:
    """Write a note in the tenant's database; answer the marker of the database written."""
    await on_tenant(Note.objects, request).acreate(
        token=request.POST["token"],
        tenant=tenant(request),
        user=request.POST["user"],
        body=request.POST["body"],
    )
    return answer(await on_tenant(Marker.objects, request).aget())


@require_GET
async def tenant_note(request: HttpRequest) -> JsonResponse:
    """Whether the note this user just wrote is there."""
    found = await on_tenant(Note.objects, request).filter(token=request.GET["token"]).aexists()
    return answer(await on_tenant(Marker.objects, request).aget(), found=found)


@require_GET
async def shared_read(request: HttpRequest) -> JsonResponse:
    """A read of the shared database (the replica unless the user is pinned)."""
    count = await shared_reads(Note.objects).filter(user=request.GET["user"]).acount()
    return answer(await shared_reads(Marker.objects).aget(), count=count)


@require_POST
async def shared_write(request: HttpRequest) -> JsonResponse:
    """Write a note in the shared database (the primary)."""
    await shared_writes(Note.objects).acreate(
        token=request.POST["token"],
        tenant="shared",
        user=request.POST["user"],
        body=request.POST["body"],
    )
    return answer(await shared_writes(Marker.objects).aget())


@require_GET
async def shared_note(request: HttpRequest) -> JsonResponse:
    """Whether the shared note this user just wrote is seen (read your writes)."""
    found = await shared_reads(Note.objects).filter(token=request.GET["token"]).aexists()
    return answer(await shared_reads(Marker.objects).aget(), found=found)
