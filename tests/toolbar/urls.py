"""Views and URLs of the routing panel's test project.

Each view routes a few queries the way a site would; the tests read what the panel
shows of them. ``TENANT`` is the settings dict of a tenant's SQLite database, with the
test app's tables, set by the tests (a runtime configuration, registered when a
block on it is entered).
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

import dynroute
from tests.testapp.models import Item

#: The tenant's settings (set by the test that uses them).
TENANT: dict[str, Any] = {}
#: The password the "secret" view's configuration holds, and the value it queries.
PASSWORD = "s3cret-marker"
PARAMETER = "param-marker"

REPLICAS = dynroute.PrimaryReplica("default", ("replica1",))

PAGE = (
    "<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
)


def page(title: str) -> HttpResponse:
    """An HTML page the toolbar can be inserted into."""
    return HttpResponse(PAGE.format(title=title))


def routed(request: HttpRequest) -> HttpResponse:
    """A replica read, a tenant's reads and writes, and a query outside every block."""
    Item.objects.count()  # no block: Django's default
    with dynroute.in_database(policy=REPLICAS):
        list(Item.objects.all())  # the replica chosen
    with dynroute.in_database(TENANT, write=True):
        Item.objects.create(name="tenant item")
        list(Item.objects.filter(name=PARAMETER))
    return page("routed")


def pinned(request: HttpRequest) -> HttpResponse:
    """A PrimaryReplica block that writes, then reads (from the primary)."""
    with dynroute.in_database(policy=REPLICAS):
        list(Item.objects.all())  # the replica
        Item.objects.create(name="written")  # the primary
        list(Item.objects.all())  # the primary: pinned after the write
    return page("pinned")


def prevented(request: HttpRequest) -> HttpResponse:
    """Reads inside prevent_writes() and inside a block that prevents writes."""
    with dynroute.prevent_writes():
        list(Item.objects.all())
    with dynroute.in_database("other", prevent_writes=True):
        list(Item.objects.all())
    return page("prevented")


def nested(request: HttpRequest) -> HttpResponse:
    """A write in a reading block inside a writing one: the outer block decides it."""
    with dynroute.in_database("other", write=True):
        with dynroute.in_database("replica2"):
            list(Item.objects.all())  # replica2: the inner block
            Item.objects.create(name="nested")  # other: the outer block
        list(Item.objects.using("replica1").all())  # .using(): not the block
    return page("nested")


def secret(request: HttpRequest) -> HttpResponse:
    """A tenant whose settings hold a password, queried with a parameter."""
    with dynroute.in_database({**TENANT, "PASSWORD": PASSWORD}) as route:
        Item.objects.filter(name=PARAMETER).count()
        with connections[route.alias].cursor() as cursor:  # a value written into raw SQL
            cursor.execute(f"SELECT COUNT(*) FROM testapp_item WHERE name = '{PARAMETER}'")  # noqa: S608 - the test's own constant, on purpose
    return page("secret")


async def arouted(request: HttpRequest) -> HttpResponse:
    """As :func:`routed`, with the async ORM (its queries run in another thread)."""
    await Item.objects.acount()
    async with dynroute.in_database(policy=REPLICAS):
        [item async for item in Item.objects.all()]
    async with dynroute.in_database(TENANT, write=True):
        await Item.objects.acreate(name="tenant item")
    return page("arouted")


urlpatterns = [
    path("routed/", routed),
    path("pinned/", pinned),
    path("prevented/", prevented),
    path("nested/", nested),
    path("secret/", secret),
    path("arouted/", arouted),
    path("__debug__/", include("debug_toolbar.urls")),
]
