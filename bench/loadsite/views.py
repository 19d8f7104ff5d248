"""The sync views (gunicorn): each answers JSON naming the database it read from.

Every answer holds ``marker`` (the name in the marker row of the database the view
read from) and ``standby`` (whether that server is the standby); the reads of a
note also ``found`` (whether the note with that token was seen).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from django.http import JsonResponse
from django.views.decorators.http import require_GET, require_POST

from loadsite.models import Marker, Note
from loadsite.queries import on_tenant, shared_reads, shared_writes, tenant

if TYPE_CHECKING:
    from django.http import HttpRequest


def answer(marker: Marker, **more: object) -> JsonResponse:
    """The JSON answer: the marker read, and the view's own figures."""
    return JsonResponse({"marker": marker.name, "standby": marker.standby, **more})


def health(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - a view's signature
    """Answer without touching a database: the server is up."""
    return JsonResponse({"pid": os.getpid()})


@require_GET
def tenant_read(request: HttpRequest) -> JsonResponse:
    """The tenant's marker and this user's latest notes."""
    notes = on_tenant(Note.objects, request).filter(user=request.GET["user"])
    latest = list(notes.order_by("-id").values_list("body", flat=True)[:5])
    return answer(on_tenant(Marker.objects, request).get(), count=len(latest))


@require_POST
def tenant_write(request: HttpRequest) -> JsonResponse:
    """Write a note in the tenant's database; answer the marker of the database written."""
    on_tenant(Note.objects, request).create(
        token=request.POST["token"],
        tenant=tenant(request),
        user=request.POST["user"],
        body=request.POST["body"],
    )
    return answer(on_tenant(Marker.objects, request).get())


@require_GET
def tenant_note(request: HttpRequest) -> JsonResponse:
    """Whether the note this user just wrote is there."""
    found = on_tenant(Note.objects, request).filter(token=request.GET["token"]).exists()
    return answer(on_tenant(Marker.objects, request).get(), found=found)


@require_GET
def shared_read(request: HttpRequest) -> JsonResponse:
    """A read of the shared database (the replica unless the user is pinned)."""
    count = shared_reads(Note.objects).filter(user=request.GET["user"]).count()
    return answer(shared_reads(Marker.objects).get(), count=count)


@require_POST
def shared_write(request: HttpRequest) -> JsonResponse:
    """Write a note in the shared database (the primary)."""
    shared_writes(Note.objects).create(
        token=request.POST["token"],
        tenant="shared",
        user=request.POST["user"],
        body=request.POST["body"],
    )
    return answer(shared_writes(Marker.objects).get())


@require_GET
def shared_note(request: HttpRequest) -> JsonResponse:
    """Whether the shared note this user just wrote is seen (read your writes)."""
    found = shared_reads(Note.objects).filter(token=request.GET["token"]).exists()
    return answer(shared_reads(Marker.objects).get(), found=found)
