"""Request middleware: each request runs inside a block.

``PrimaryReplicaMiddleware`` runs each request in a :class:`~dynroute.PrimaryReplica`
block configured by ``settings.DYNROUTE_PRIMARY_REPLICA``::

    MIDDLEWARE = [..., "dynroute.middleware.PrimaryReplicaMiddleware", ...]
    DYNROUTE_PRIMARY_REPLICA = {"primary": "default", "replicas": ["replica1"]}

``DatabaseMiddleware`` runs each request in the block a resolver of the project
chooses (a database per tenant, say), configured by ``settings.DYNROUTE_REQUEST_ROUTE``::

    MIDDLEWARE = [..., "dynroute.middleware.DatabaseMiddleware", ...]
    DYNROUTE_REQUEST_ROUTE = "tenants.routing.database_for"   # (request) -> target
    DYNROUTE_REQUEST_LOCK = True    # a request cannot enter a block on another database

The middleware only enters blocks; the routing is the block's. It serves WSGI and ASGI
without a thread hop. Settings are read when Django builds the middleware chain: when
the WSGI or ASGI handler is created (server or worker start), or at a test client's
first request.
"""

from __future__ import annotations

import inspect
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast, final

from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from dynroute import _signals
from dynroute._block import InDatabase, in_database
from dynroute._decorating import iscoroutinefunction, markcoroutinefunction
from dynroute._locks import lock, release
from dynroute._replicas import (
    PrimaryReplica,
    current_entry,
    has_written,
    read_primaries,
    use_primary,
    used_primary,
)
from dynroute.exceptions import ConfigurationError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from types import TracebackType

    from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

    from dynroute._policies import RoutingPolicy

__all__ = ["DatabaseMiddleware", "PrimaryReplicaMiddleware"]

#: Methods that do not change anything (RFC 9110 §9.2.1): their reads use a replica.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_SETTING: Final = "DYNROUTE_PRIMARY_REPLICA"
_KEYS: Final = {
    "primary": "the alias writes go to (default 'default')",
    "replicas": "the aliases reads may go to (required)",
    "pin_seconds": "seconds a client reads from the primary after it wrote (default 2)",
    "choose": "'round_robin', 'random' or a dotted path to a function (default 'round_robin')",
    "down_seconds": "seconds a replica that failed to connect is skipped (default 30)",
    "resolver": "a dotted path to a function (request) -> 'primary' | 'replica' | None",
    "cookie_name": "the pin cookie's name (default 'dynroute_pin')",
    "cookie_secure": "the pin cookie's Secure flag (default SESSION_COOKIE_SECURE)",
    "cookie_httponly": "the pin cookie's HttpOnly flag (default SESSION_COOKIE_HTTPONLY)",
    "cookie_samesite": "the pin cookie's SameSite (default SESSION_COOKIE_SAMESITE)",
}
_SALT: Final = "dynroute.middleware.PrimaryReplicaMiddleware"

_NO_SCOPE: Final = nullcontext()

#: Pin cookies whose signature was found valid, by (cookie name, value): when each
#: was signed (seconds since the epoch). A client sends the same cookie with every
#: request of its pin window; its HMAC is checked on the first (~110,000 instructions
#: with Django's signer), the others look it up here and check its age. Only a
#: value that passed the check is kept; at most ``_VERIFIED_MAX``, oldest dropped
#: first; forgotten when ``SECRET_KEY`` changes.
_VERIFIED: dict[tuple[str, str], int] = {}
_VERIFIED_MAX: Final = 4096
_VERIFYING = threading.Lock()
_PRIMARY: Final = "primary"
_REPLICA: Final = "replica"


def _config() -> dict[str, Any]:
    given: object = getattr(settings, _SETTING, None)
    if not isinstance(given, dict):
        msg = (
            f"PrimaryReplicaMiddleware needs settings.{_SETTING}, a dict such as "
            f'{{"primary": "default", "replicas": ["replica1"]}}; got {type(given).__name__}.'
        )
        raise ConfigurationError(msg)
    config = cast("dict[str, Any]", given)
    unknown = sorted(str(key) for key in config if key not in _KEYS)
    if unknown:
        known = "; ".join(f"{key}: {meaning}" for key, meaning in _KEYS.items())
        msg = f"settings.{_SETTING} has unknown key(s) {', '.join(unknown)}. Known keys: {known}."
        raise ConfigurationError(msg)
    if "replicas" not in config:
        msg = f'settings.{_SETTING} needs "replicas": the aliases reads may go to.'
        raise ConfigurationError(msg)
    return config


def _imported(config: dict[str, Any], key: str) -> Any:  # noqa: ANN401 - whatever the path names
    value = config.get(key)
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as error:
        msg = f"settings.{_SETTING}[{key!r}] = {value!r} cannot be imported: {error}"
        raise ConfigurationError(msg) from None


class PrimaryReplicaMiddleware:
    """Run each request in a primary/replica block; pin a client's reads after it writes.

    - Requests with a safe method (GET, HEAD, OPTIONS, TRACE) read from the block's
      replica; other requests read from the primary too.
    - After a request that wrote to the primary, or used an unsafe method, the
      response sets a signed cookie; for ``pin_seconds`` the client's requests read
      from the primary, so the page after a POST shows what was saved. A forged or
      expired cookie is ignored.
    - ``"resolver"``, a function of the request returning ``"primary"``, ``"replica"``
      or ``None`` (the rules above), decides per request: ``"replica"`` for a POST that
      only reads (GraphQL queries), ``"primary"`` for a view that must not lag.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        """Read ``settings.DYNROUTE_PRIMARY_REPLICA``; build the block every request enters.

        Raises:
            ConfigurationError: The setting is missing, has an unknown key, or names
                something that cannot be imported.
            UsageError: A value is of the wrong type (as ``PrimaryReplica`` says).
        """
        self.get_response = get_response
        config = _config()
        choose = config.get("choose", "round_robin")
        if choose not in ("round_robin", "random"):
            choose = _imported(config, "choose")
        self.policy = PrimaryReplica(
            config.get("primary", "default"),
            config["replicas"],
            choose=choose,
            down_seconds=config.get("down_seconds", 30.0),
        )
        self.block = in_database(policy=self.policy)
        pin_seconds = config.get("pin_seconds", 2)
        if type(pin_seconds) is not int or pin_seconds < 0:
            msg = (
                f'settings.{_SETTING}["pin_seconds"] must be a whole number of seconds >= 0, '
                f"got {pin_seconds!r}."
            )
            raise ConfigurationError(msg)
        self.pin_seconds: int = pin_seconds
        self.resolver: Callable[[HttpRequest], object] | None = _imported(config, "resolver")
        if self.resolver is not None and not callable(self.resolver):
            msg = f'settings.{_SETTING}["resolver"] must be a function, got {self.resolver!r}.'
            raise ConfigurationError(msg)
        self.cookie_name: str = config.get("cookie_name", "dynroute_pin")
        self._cookie = {
            "secure": config.get("cookie_secure", settings.SESSION_COOKIE_SECURE),
            "httponly": config.get("cookie_httponly", settings.SESSION_COOKIE_HTTPONLY),
            "samesite": config.get("cookie_samesite", settings.SESSION_COOKIE_SAMESITE),
            "path": settings.SESSION_COOKIE_PATH,
            "domain": settings.SESSION_COOKIE_DOMAIN,
        }
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        """Show the policy."""
        return f"PrimaryReplicaMiddleware({self.policy!r})"

    def __call__(self, request: HttpRequest) -> Any:  # noqa: ANN401 - a response, or its coroutine under ASGI
        """Handle ``request`` inside the block (under ASGI, return the coroutine that does)."""
        if self._async:
            return self.__acall__(request)
        given = None if self.resolver is None else self._call_sync_resolver(request)
        primary = self._reads_primary(given, request)
        # Plain with statements, not an ExitStack: this runs on every request.
        with self.block, self._read_scope(primary=primary):
            response = cast("HttpResponseBase", self.get_response(request))
            wrote = has_written(self.policy.primary)
            if response.streaming:
                self._stream_inside(response, primary=primary or wrote)
        self._pin(request, response, primary=primary, wrote=wrote)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Handle ``request`` inside the block, in this task (no thread hop)."""
        given = self._call_resolver(request)
        if inspect.isawaitable(given):
            given = await given
        primary = self._reads_primary(given, request)
        get_response = cast(
            "Callable[[HttpRequest], Awaitable[HttpResponseBase]]", self.get_response
        )
        with self.block, self._read_scope(primary=primary):
            response = await get_response(request)
            wrote = has_written(self.policy.primary)
            if response.streaming:
                self._stream_inside(response, primary=primary or wrote)
        self._pin(request, response, primary=primary, wrote=wrote)
        return response

    def _read_scope(self, *, primary: bool) -> AbstractContextManager[None]:
        """Inside the request's block: what sends its reads to the primary, if they go there."""
        if not primary or read_primaries():  # read_primaries(): until the block exits
            return _NO_SCOPE
        return use_primary()  # inside an enclosing block: for this request only

    def _call_resolver(self, request: HttpRequest) -> object:
        return None if self.resolver is None else self.resolver(request)

    def _call_sync_resolver(self, request: HttpRequest) -> object:
        return _sync_answer(self._call_resolver(request), _SETTING)

    def _reads_primary(self, given: object, request: HttpRequest) -> bool:
        """Return whether the request's reads go to the primary (else to the replica)."""
        if given is None:
            if request.method not in SAFE_METHODS:
                return True
        elif given == _PRIMARY:
            return True
        elif given != _REPLICA:
            msg = (
                f"The resolver of settings.{_SETTING} returned {given!r} for {request.method} "
                f"{request.path}: it must return 'primary', 'replica' or None."
            )
            raise UsageError(msg)
        # A replica request, unless the client wrote within pin_seconds.
        return self._pinned_by_cookie(request)

    def _pinned_by_cookie(self, request: HttpRequest) -> bool:
        """Return whether the request carries a valid pin cookie (its client wrote lately)."""
        if not self.pin_seconds:
            return False
        value = request.COOKIES.get(self.cookie_name)
        if value is None:
            return False
        key = (self.cookie_name, value)
        signed_at = _VERIFIED.get(key)
        if signed_at is None:
            if (
                request.get_signed_cookie(
                    self.cookie_name, default=None, salt=_SALT, max_age=self.pin_seconds
                )
                is None
            ):
                return False  # forged, expired, or not ours
            signed_at = _remember(key)
        if time.time() - signed_at > self.pin_seconds:
            return False
        if _signals.listening:
            _signals.reads_pinned.send_robust(
                sender=PrimaryReplica, primary=self.policy.primary, reason="cookie"
            )
        return True

    def _pin(
        self, request: HttpRequest, response: HttpResponseBase, *, primary: bool, wrote: bool
    ) -> None:
        """Set the pin cookie after a write, or after an unsafe request read the primary."""
        if self.pin_seconds and (wrote or (primary and request.method not in SAFE_METHODS)):
            response.set_signed_cookie(
                self.cookie_name, "1", salt=_SALT, max_age=self.pin_seconds, **self._cookie
            )

    def _stream_inside(self, response: HttpResponseBase, *, primary: bool) -> None:
        """Make a streaming response's iteration run in this request's block and replica."""
        entry = current_entry()
        if entry is None:
            return
        # Where the request read: the primary for a "primary" request, a @use_primary
        # view (whose scope ended when it returned) or a request that wrote; else the
        # replica chosen for it.
        if primary or used_primary():
            block: InDatabase[Any] = in_database(entry.primary, write=True)
        else:
            block = in_database(policy=entry)
        _stream_in(response, block)


def _sync_answer(given: object, setting: str) -> object:
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


def _remember(key: tuple[str, str]) -> int:
    """Keep a pin cookie whose signature is valid; return when it was signed."""
    # TimestampSigner's format: value:timestamp:signature, the timestamp in base 62.
    signed_at = signing.b62_decode(key[1].rsplit(":", 2)[1])
    with _VERIFYING:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            del _VERIFIED[next(iter(_VERIFIED))]
        _VERIFIED[key] = signed_at
    return signed_at


def _forget_verified(*, setting: str, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    if setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        with _VERIFYING:
            _VERIFIED.clear()


setting_changed.connect(_forget_verified, dispatch_uid="dynroute.middleware._forget_verified")


def _routed_sync(content: Iterator[Any], block: _Scope) -> Iterator[Any]:
    """Yield ``content``'s chunks, each produced inside the block (never across a yield)."""
    iterator = iter(content)
    while True:
        with block:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


async def _routed_async(
    content: AsyncIterator[Any],
    block: _Scope,
) -> AsyncIterator[Any]:
    """As :func:`_routed_sync`, for an async iterator."""
    iterator = aiter(content)
    while True:
        async with block:  # a runtime configuration connects in the async ORM's thread
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        yield chunk


_ROUTE_SETTING: Final = "DYNROUTE_REQUEST_ROUTE"
_LOCK_SETTING: Final = "DYNROUTE_REQUEST_LOCK"


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
        path: object = getattr(settings, _ROUTE_SETTING, None)
        if not isinstance(path, str):
            msg = (
                f"DatabaseMiddleware needs settings.{_ROUTE_SETTING}, the dotted path of a "
                f"function (request) -> target; got {type(path).__name__}."
            )
            raise ConfigurationError(msg)
        try:
            resolver: object = import_string(path)
        except ImportError as error:
            msg = f"settings.{_ROUTE_SETTING} = {path!r} cannot be imported: {error}"
            raise ConfigurationError(msg) from None
        if not callable(resolver):
            msg = f"settings.{_ROUTE_SETTING} = {path!r} names {resolver!r}, not a function."
            raise ConfigurationError(msg)
        self.resolver: Callable[[HttpRequest], object] = resolver
        lock: object = getattr(settings, _LOCK_SETTING, False)
        if type(lock) is not bool:
            msg = f"settings.{_LOCK_SETTING} must be True or False, got {lock!r}."
            raise ConfigurationError(msg)
        self.lock: bool = lock
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        """Show the resolver and the lock."""
        name = getattr(self.resolver, "__qualname__", type(self.resolver).__name__)
        return f"DatabaseMiddleware(resolver={name}, lock={self.lock})"

    def __call__(self, request: HttpRequest) -> Any:  # noqa: ANN401 - a response, or its coroutine under ASGI
        """Handle ``request`` inside its block (under ASGI, return the coroutine that does)."""
        if self._async:
            return self.__acall__(request)
        given = _sync_answer(self.resolver(request), _ROUTE_SETTING)
        scope = self._scope(given, request)
        if scope is None:
            return self.get_response(request)
        with scope:
            response = cast("HttpResponseBase", self.get_response(request))
        if response.streaming:
            _stream_in(response, scope)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Handle ``request`` inside its block, in this task (no thread hop)."""
        given = self.resolver(request)
        if inspect.isawaitable(given):
            given = await given
        get_response = cast(
            "Callable[[HttpRequest], Awaitable[HttpResponseBase]]", self.get_response
        )
        scope = self._scope(given, request)
        if scope is None:
            return await get_response(request)
        async with scope:
            response = await get_response(request)
        if response.streaming:
            _stream_in(response, scope)
        return response

    def _scope(self, given: object, request: HttpRequest) -> _Scope | None:
        """The block of the resolver's answer, locked to its database if asked."""
        if given is None:
            return None
        if isinstance(given, InDatabase):
            # isinstance() gives pyright InDatabase[Unknown]; mypy's is InDatabase[Any].
            block: InDatabase[Any] = given  # pyright: ignore[reportUnknownVariableType]
        elif isinstance(given, (str, dict)):
            block = in_database(cast("str | dict[str, Any]", given), write=True)
        elif callable(getattr(given, "db_for_read", None)) and callable(
            getattr(given, "db_for_write", None)
        ):
            block = in_database(policy=cast("RoutingPolicy", given))
        else:
            # The type only: the value may be settings holding a password.
            msg = (
                f"The resolver of settings.{_ROUTE_SETTING} returned a {type(given).__name__} "
                f"for {request.method} {request.path}: it must return an alias, a settings "
                "dict, a RoutingPolicy, an in_database() block, or None."
            )
            raise UsageError(msg)
        if not self.lock:
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
        lock(self.alias)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            release()
        finally:
            self.block.__exit__(exc_type, exc_value, traceback)

    async def __aenter__(self) -> None:
        await self.block.__aenter__()
        lock(self.alias)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            release()
        finally:
            await self.block.__aexit__(exc_type, exc_value, traceback)


#: What a request runs in: a block, or a block and its lock.
_Scope: TypeAlias = "InDatabase[Any] | _LockedBlock"


def _stream_in(response: HttpResponseBase, scope: _Scope) -> None:
    """Make a streaming response's iteration run in ``scope``, each chunk inside it."""
    streaming = cast("StreamingHttpResponse", response)
    content = streaming.streaming_content
    if streaming.is_async:
        streaming.streaming_content = _routed_async(content, scope)  # type: ignore[arg-type]
    else:
        streaming.streaming_content = _routed_sync(content, scope)  # type: ignore[arg-type]
