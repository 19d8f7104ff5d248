"""``DatabaseMiddleware``: each request in the block a resolver of the project chooses.

Configured by ``settings.DYNROUTE_REQUEST_ROUTE`` (and ``DYNROUTE_REQUEST_LOCK``), parsed
once into :class:`RequestRouteSettings` when Django builds the middleware chain::

    MIDDLEWARE = [..., "dynroute.middleware.DatabaseMiddleware", ...]
    DYNROUTE_REQUEST_ROUTE = "tenants.routing.database_for"   # (request) -> target
    DYNROUTE_REQUEST_LOCK = True    # a request cannot enter a block on another database
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast, final

from django.conf import settings
from django.http import HttpRequest

from dynroute import tenants
from dynroute.core import (
    DatabaseAlias,
    DatabaseConfiguration,
    iscoroutinefunction,
    markcoroutinefunction,
)
from dynroute.exceptions import ConfigurationError, UsageError
from dynroute.http._streaming import imported, stream_in, sync_answer
from dynroute.routing import InDatabase, in_database

if TYPE_CHECKING:
    from types import TracebackType

    from django.http import HttpResponseBase

    from dynroute.core import Block, DatabaseTarget, RoutingPolicy
    from dynroute.http._streaming import AsyncGetResponse

__all__ = ["DatabaseMiddleware", "RequestRouteSettings"]

_ROUTE_SETTING: Final = "DYNROUTE_REQUEST_ROUTE"
_LOCK_SETTING: Final = "DYNROUTE_REQUEST_LOCK"


@final
@dataclass(frozen=True, slots=True)
class RequestRouteSettings:
    """``DYNROUTE_REQUEST_ROUTE`` and ``DYNROUTE_REQUEST_LOCK``, checked.

    Attributes:
        resolver: The function ``(request) -> target`` the setting names.
        lock: Whether each request is locked to its block's database.
    """

    resolver: Callable[[HttpRequest], object]
    lock: bool

    @classmethod
    def from_settings(cls) -> RequestRouteSettings:
        """Read and check the settings.

        Raises:
            ConfigurationError: ``DYNROUTE_REQUEST_ROUTE`` is missing, cannot be imported
                or does not name a function; ``DYNROUTE_REQUEST_LOCK`` is not a bool.
        """
        path: object = getattr(settings, _ROUTE_SETTING, None)
        if not isinstance(path, str):
            msg = (
                f"DatabaseMiddleware needs settings.{_ROUTE_SETTING}, the dotted path of a "
                f"function (request) -> target; got {type(path).__name__}."
            )
            raise ConfigurationError(msg)
        resolver = imported(path, f"settings.{_ROUTE_SETTING}")
        if not callable(resolver):
            msg = f"settings.{_ROUTE_SETTING} = {path!r} names {resolver!r}, not a function."
            raise ConfigurationError(msg)
        lock: object = getattr(settings, _LOCK_SETTING, False)
        if type(lock) is not bool:
            msg = f"settings.{_LOCK_SETTING} must be True or False, got {lock!r}."
            raise ConfigurationError(msg)
        return cls(resolver, lock)


class DatabaseMiddleware:
    """Run each request in the block a resolver chooses for it.

    ``settings.DYNROUTE_REQUEST_ROUTE`` names the resolver, ``(request) -> target``
    (a coroutine function too, under ASGI), which returns an alias, a settings dict (a
    runtime configuration), a :class:`~dynroute.RoutingPolicy`, an ``in_database()``
    block, or ``None`` for no block. An alias or a dict is routed for reads and writes
    (``write=True``); a block keeps its own flags. The iteration of a
    ``StreamingHttpResponse`` runs in the block too, each chunk inside it.

    With ``settings.DYNROUTE_REQUEST_LOCK = True`` each request is locked to its
    block's database: entering a block on another alias or runtime configuration
    inside it raises :class:`~dynroute.exceptions.RouteLockedError`, unless inside
    :func:`dynroute.unlocked`.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        """Read the settings: the resolver, and whether requests are locked.

        Raises:
            ConfigurationError: ``DYNROUTE_REQUEST_ROUTE`` is missing, cannot be imported
                or does not name a function; ``DYNROUTE_REQUEST_LOCK`` is not a bool.
        """
        self.get_response = get_response
        self.settings = RequestRouteSettings.from_settings()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        """Show the resolver and the lock."""
        name = getattr(
            self.settings.resolver, "__qualname__", type(self.settings.resolver).__name__
        )
        return f"DatabaseMiddleware(resolver={name}, lock={self.settings.lock})"

    def __call__(self, request: HttpRequest) -> Any:  # noqa: ANN401 - a response, or its coroutine under ASGI
        """Handle ``request`` inside its block (under ASGI, return the coroutine that does)."""
        if self._async:
            return self.__acall__(request)
        given = sync_answer(self.settings.resolver(request), _ROUTE_SETTING)
        scope = self._scope(given, request)
        if scope is None:
            return self.get_response(request)
        with scope:
            response = cast("HttpResponseBase", self.get_response(request))
        if response.streaming:
            stream_in(response, scope)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Handle ``request`` inside its block, in this task (no thread hop)."""
        given = self.settings.resolver(request)
        if inspect.isawaitable(given):
            given = await given
        get_response = cast("AsyncGetResponse", self.get_response)
        scope = self._scope(given, request)
        if scope is None:
            return await get_response(request)
        async with scope:
            response = await get_response(request)
        if response.streaming:
            stream_in(response, scope)
        return response

    def _scope(self, given: object, request: HttpRequest) -> Block | None:
        """The block of the resolver's answer, locked to its database if asked."""
        if given is None:
            return None
        if isinstance(given, InDatabase):
            # isinstance() gives pyright InDatabase[Unknown]; mypy's is InDatabase[Any].
            block: InDatabase[Any] = given  # pyright: ignore[reportUnknownVariableType]
        elif isinstance(given, (str, dict, DatabaseAlias, DatabaseConfiguration)):
            # A DatabaseAlias or DatabaseConfiguration: what database_named() gives.
            target = cast("str | dict[str, Any] | DatabaseTarget", given)
            block = in_database(target, write=True)
        elif callable(getattr(given, "db_for_read", None)) and callable(
            getattr(given, "db_for_write", None)
        ):
            policy = cast("RoutingPolicy", given)
            block = in_database(policy=policy)
        else:
            # The type only: the value may be settings holding a password.
            msg = (
                f"The resolver of settings.{_ROUTE_SETTING} returned a {type(given).__name__} "
                f"for {request.method} {request.path}: it must return an alias, a settings "
                "dict, a target (database_named()), a RoutingPolicy, an in_database() block, "
                "or None."
            )
            raise UsageError(msg)
        if not self.settings.lock:
            return block
        alias = block.route.alias
        if alias is None:
            msg = (
                f"settings.{_LOCK_SETTING} locks a request to one database, but the resolver "
                f"returned {block!r} for {request.method} {request.path}, whose policy "
                "has no single database: return an alias, a settings dict or a block on one."
            )
            raise UsageError(msg)
        return _LockedBlock(block, alias)


@final
class _LockedBlock:
    """A request's block, and the route lock to its database while it is active."""

    __slots__ = ("alias", "block")

    def __init__(self, block: InDatabase[Any], alias: str) -> None:
        self.block = block
        self.alias = alias

    def __repr__(self) -> str:
        return f"<{self.block!r}, locked>"

    def __enter__(self) -> None:
        self.block.__enter__()
        tenants.lock(self.alias)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            tenants.release()
        finally:
            self.block.__exit__(exc_type, exc_value, traceback)

    async def __aenter__(self) -> None:
        await self.block.__aenter__()
        tenants.lock(self.alias)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            tenants.release()
        finally:
            await self.block.__aexit__(exc_type, exc_value, traceback)
