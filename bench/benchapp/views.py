"""The views the request measures call: one read, or one write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpResponse

from benchapp.models import Item, Note

if TYPE_CHECKING:
    from django.http import HttpRequest


def read(request: HttpRequest) -> HttpResponse:  # noqa: ARG001 - a view's signature
    """Count the items: one read query; the count tells which database answered."""
    return HttpResponse(str(Item.objects.count()))


def write(request: HttpRequest) -> HttpResponse:  # noqa: ARG001 - a view's signature
    """Save one note: one write query; answer the alias it was saved to."""
    note = Note.objects.create(text="posted")
    return HttpResponse(note._state.db)  # noqa: SLF001 - Django's model API
