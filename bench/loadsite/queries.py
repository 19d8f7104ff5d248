"""Where each variant's views send their queries: the one place the variants differ.

- ``plain``: ``.using()`` names every database: the tenant's alias, ``"replica"`` for
  shared reads, ``"default"`` for shared writes;
- ``dynroute``: no ``.using()``: the middlewares' blocks route every query;
- ``multidb``: ``.using()`` for the tenant's alias, the router for the shared database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from django.db import models
from django.http import Http404

from loadsite.config import TENANT_HEADER, TENANTS, VARIANT

if TYPE_CHECKING:
    from django.db.models.manager import Manager
    from django.db.models.query import QuerySet
    from django.http import HttpRequest

ModelT = TypeVar("ModelT", bound=models.Model)


def tenant(request: HttpRequest) -> str:
    """The tenant the request names (404 for none or an unknown one)."""
    name = request.headers.get(TENANT_HEADER)
    if name is None or name not in TENANTS:
        raise Http404(name)
    return name


def on_tenant(manager: Manager[ModelT], request: HttpRequest) -> QuerySet[ModelT]:
    """The tenant's rows: named with ``.using()``, or routed by dynroute's tenant block."""
    if VARIANT == "dynroute":
        return manager.all()
    return manager.using(f"tenant_{tenant(request)}")


def shared_reads(manager: Manager[ModelT]) -> QuerySet[ModelT]:
    """Reads of the shared database: the replica named, or routed (replica or pinned)."""
    if VARIANT == "plain":
        return manager.using("replica")
    return manager.all()


def shared_writes(manager: Manager[ModelT]) -> QuerySet[ModelT]:
    """Writes to the shared database (and reads in the request that writes)."""
    if VARIANT == "plain":
        return manager.using("default")
    return manager.all()
