"""What both request middlewares share: a resolver's answer under WSGI, and streaming.

A ``StreamingHttpResponse`` is iterated by the server after every middleware has
returned (DJANGO_NOTES §13): a block entered around the view is gone by then. So the
response's iterator is wrapped to produce each chunk inside the request's block (never
across a ``yield``: the consumer of a chunk is the server, not the request's code).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from django.utils.module_loading import import_string

from dynroute.exceptions import ConfigurationError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

    from dynroute.core import Block

__all__ = ["AsyncGetResponse", "imported", "stream_in", "sync_answer"]

#: What a middleware's ``get_response`` is under ASGI.
AsyncGetResponse: TypeAlias = "Callable[[HttpRequest], Awaitable[HttpResponseBase]]"


def imported(path: str, setting: str) -> object:
    """What the dotted ``path`` a setting gives names.

    Raises:
        ConfigurationError: It cannot be imported; the message names ``setting``
            (``settings.NAME`` or ``settings.NAME['key']``) and the path.
    """
    try:
        return import_string(path)
    except ImportError as error:
        msg = f"{setting} = {path!r} cannot be imported: {error}"
        raise ConfigurationError(msg) from None


def sync_answer(given: object, setting: str) -> object:
    """A resolver's answer under WSGI, where it cannot be awaited.

    Raises:
        UsageError: The resolver is a coroutine function.
    """
    if inspect.isawaitable(given):
        close = getattr(given, "close", None)
        if callable(close):
            close()  # no "never awaited" warning on top of the error
        msg = (
            f"The resolver of settings.{setting} is a coroutine function, which needs "
            "an async middleware chain (ASGI): make it a plain function under WSGI."
        )
        raise UsageError(msg)
    return given


def stream_in(response: HttpResponseBase, scope: Block) -> None:
    """Make a streaming response's iteration run in ``scope``, each chunk inside it.

    ``scope``: what the request ran in, a block (or a block and its route lock).
    """
    streaming = cast("StreamingHttpResponse", response)
    content = streaming.streaming_content
    if streaming.is_async:
        streaming.streaming_content = _routed_async(content, scope)  # type: ignore[arg-type]  # django-stubs types the content as the sync iterator only
    else:
        streaming.streaming_content = _routed_sync(content, scope)  # type: ignore[arg-type]  # django-stubs types the content as the sync iterator only


def _routed_sync(content: Iterator[Any], block: Block) -> Iterator[Any]:
    """Yield ``content``'s chunks, each produced inside the block (never across a yield)."""
    iterator = iter(content)
    while True:
        with block:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


async def _routed_async(content: AsyncIterator[Any], block: Block) -> AsyncIterator[Any]:
    """As :func:`_routed_sync`, for an async iterator."""
    iterator = aiter(content)
    while True:
        async with block:  # a runtime configuration connects in the async ORM's thread
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        yield chunk
