"""What the middlewares' tests share: a view's read, a client per mode, where a read went.

Each test database holds a marker row of its own, so a read's rows show which
database it reached, not only the alias the router gave.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.test import AsyncClient, Client

from tests.testapp.models import Item

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Container, Mapping

#: How the tests run: sync views under WSGI, async views under ASGI, sync views under ASGI.
MODES = ("wsgi", "asgi", "asgi-sync-views")


def read() -> dict[str, Any]:
    """One query, in a view: the alias the router gives and the names it returns."""
    query = Item.objects.order_by("name")
    return {"db": query.db, "names": list(query.values_list("name", flat=True))}


async def aread() -> dict[str, Any]:
    """As :func:`read`, with the async ORM."""
    query = Item.objects.order_by("name")
    return {"db": query.db, "names": [name async for name in query.values_list("name", flat=True)]}


class Browser:
    """One client: a ``Client``, or an ``AsyncClient`` whose requests run on ``loop``.

    Views are named without their async prefix: in "asgi" mode ``get("names")`` asks
    the async view ``anames`` when the view has one (``async_views``, default all);
    in "asgi-sync-views" mode the sync views answer through the async handler.
    """

    def __init__(
        self, mode: str, loop: asyncio.AbstractEventLoop, async_views: Container[str] | None = None
    ) -> None:
        self.mode = mode
        self.loop = loop
        self.async_views = async_views
        self.client: Client | AsyncClient = Client() if mode == "wsgi" else AsyncClient()

    def another(self) -> Browser:
        """A new client in the same mode: a client of its own, with no cookie."""
        return Browser(self.mode, self.loop, self.async_views)

    def request(self, method: str, view: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` on the view's URL; the client's other arguments pass through."""
        has_async = self.async_views is None or view in self.async_views
        prefix = "a" if self.mode == "asgi" and has_async else ""
        response = getattr(self.client, method)(f"/{prefix}{view}/", *args, **kwargs)
        if self.mode != "wsgi":
            response = self.loop.run_until_complete(response)
        return response

    def get(self, view: str, *args: Any, **kwargs: Any) -> Any:
        return self.request("get", view, *args, **kwargs)

    def post(self, view: str, *args: Any, **kwargs: Any) -> Any:
        return self.request("post", view, *args, **kwargs)

    def chunks(self, response: Any) -> list[dict[str, Any]]:
        """Iterate a streaming response (now, after the middleware returned): its reads."""
        if response.is_async:

            async def collect() -> list[bytes]:
                return [chunk async for chunk in response.streaming_content]

            content = self.loop.run_until_complete(collect())
        else:
            content = list(response.streaming_content)
        return [json.loads(line) for line in b"".join(content).splitlines()]


def where(read: dict[str, Any], markers: Mapping[str, str]) -> str:
    """The database a reported read reached, by its marker row (the router must agree)."""
    reached = [alias for alias, marker in markers.items() if marker in read["names"]]
    assert len(reached) == 1, f"a read saw {read['names']}"
    assert read["db"] == reached[0], f"the router said {read['db']}, the rows came from {reached}"
    return reached[0]
