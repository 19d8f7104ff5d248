"""Request middleware: each request runs inside a block.

``PrimaryReplicaMiddleware`` runs each request in a :class:`~dynroute.PrimaryReplica`
block configured by ``settings.DYNROUTE_PRIMARY_REPLICA``::

    MIDDLEWARE = [..., "dynroute.middleware.PrimaryReplicaMiddleware", ...]
    DYNROUTE_PRIMARY_REPLICA = {"primary": "default", "replicas": ["replica1"]}

The middleware only enters blocks; the routing is the block's. It serves WSGI and ASGI
without a thread hop (DJANGO_NOTES §13). Settings are read when Django builds the
middleware chain (at the first request of a handler, or of a test client).
"""

from __future__ import annotations

import inspect
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Final, cast

from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from dynroute._block import InDatabase, in_database
from dynroute._decorating import iscoroutinefunction, markcoroutinefunction
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

    from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

__all__ = ["PrimaryReplicaMiddleware"]

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
        given = self._call_resolver(request)
        if inspect.isawaitable(given):
            close = getattr(given, "close", None)
            if callable(close):
                close()  # no "never awaited" warning on top of the error
            msg = (
                f"The resolver of settings.{_SETTING} is a coroutine function, which needs "
                "an async middleware chain (ASGI): make it a plain function under WSGI."
            )
            raise UsageError(msg)
        return given

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
        return time.time() - signed_at <= self.pin_seconds

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
        streaming = cast("StreamingHttpResponse", response)
        entry = current_entry()
        if entry is None:
            return
        # Where the request read: the primary for a "primary" request, a @use_primary
        # view (whose scope ended when it returned) or a request that wrote; else the
        # replica chosen for it.
        if primary or used_primary():
            block: InDatabase = in_database(entry.primary, write=True)
        else:
            block = in_database(policy=entry)
        content = streaming.streaming_content
        if streaming.is_async:
            streaming.streaming_content = _routed_async(content, block)  # type: ignore[arg-type]
        else:
            streaming.streaming_content = _routed_sync(content, block)  # type: ignore[arg-type]


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


def _routed_sync(content: Iterator[Any], block: InDatabase) -> Iterator[Any]:
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
    block: InDatabase,
) -> AsyncIterator[Any]:
    """As :func:`_routed_sync`, for an async iterator."""
    iterator = aiter(content)
    while True:
        with block:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
        yield chunk
