"""``PrimaryReplicaMiddleware``: each request in a primary/replica block; pins after writes.

Configured by ``settings.DYNROUTE_PRIMARY_REPLICA``, parsed once into
:class:`PrimaryReplicaSettings` when Django builds the middleware chain::

    MIDDLEWARE = [..., "dynroute.middleware.PrimaryReplicaMiddleware", ...]
    DYNROUTE_PRIMARY_REPLICA = {"primary": "default", "replicas": ["replica1"]}
"""

from __future__ import annotations

import inspect
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, cast

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.signals import setting_changed

from dynroute import _switches, observe
from dynroute.core import iscoroutinefunction, markcoroutinefunction
from dynroute.exceptions import UsageError
from dynroute.http._replica_settings import SETTING, PrimaryReplicaSettings
from dynroute.http._streaming import stream_in, sync_answer
from dynroute.replicas import (
    Needing,
    Needs,
    Position,
    PrimaryReplica,
    by_time,
    current_entry,
    has_written,
    pack,
    reached,
    read_primaries,
    replayed_here,
    unpack,
    use_primary,
    used_primary,
    written_positions,
)
from dynroute.routing import InDatabase, in_database

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.http import HttpRequest, HttpResponseBase

    from dynroute.http._streaming import AsyncGetResponse

__all__ = ["PrimaryReplicaMiddleware", "PrimaryReplicaSettings"]

#: Methods that do not change anything (RFC 9110 §9.2.1): their reads use a replica.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Cookies signed with this salt stay valid across versions: never change it.
_SALT: Final = "dynroute.middleware.PrimaryReplicaMiddleware"
_PRIMARY: Final = "primary"
_REPLICA: Final = "replica"
#: The pin cookie's value: a time pin (the only format before positions), or the
#: positions of the client's writes. A version this code does not know is read as a
#: time pin: a cookie of a later release, during a deploy, pins safely.
_TIME_PIN: Final = "1"
_POSITIONS: Final = "2."

_NO_SCOPE: Final = nullcontext()

#: SameSite as ``delete_cookie`` is typed (the setting's values).
_SameSite: TypeAlias = "Literal['Lax', 'Strict', 'None'] | None"


class PrimaryReplicaMiddleware:
    """Run each request in a primary/replica block; pin a client's reads after it writes.

    - Requests with a safe method (GET, HEAD, OPTIONS, TRACE) read from the block's
      replica; other requests read from the primary too.
    - After a request that wrote to the primary, or used an unsafe method, the
      response sets a signed cookie, so that the page after a POST shows what was
      saved. With ``"pin": "position"`` (the default, on PostgreSQL and MariaDB) it
      holds the primary's position after the write, read with one query, and the
      client's requests read from a replica as soon as that replica has replayed
      it (the cookie is removed once every replica has), for at most
      ``position_seconds``; else (``"time"``, SQLite) they read from the primary for
      ``pin_seconds``. A forged or expired cookie is ignored.
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
        self.settings = PrimaryReplicaSettings.from_settings()
        self.block = in_database(policy=self.settings.policy)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    @property
    def policy(self) -> PrimaryReplica:
        """The policy every request's block routes by (from the settings)."""
        return self.settings.policy

    def __repr__(self) -> str:
        """Show the policy."""
        return f"PrimaryReplicaMiddleware({self.settings.policy!r})"

    def __call__(self, request: HttpRequest) -> Any:  # noqa: ANN401 - a response, or its coroutine under ASGI
        """Handle ``request`` inside the block (under ASGI, return the coroutine that does)."""
        if self._async:
            return self.__acall__(request)
        given = None if self.settings.resolver is None else self._call_sync_resolver(request)
        reads = self._reads(given, request)
        primary = reads is True
        # Plain with statements, not an ExitStack: this runs on every request.
        with _needing(reads=reads), self.block, self._read_scope(primary=primary):
            response = cast("HttpResponseBase", self.get_response(request))
            wrote = has_written()  # to this primary, or a tenant's inside
            positions = None
            if _pins(self.settings, request, wrote=wrote, primary=primary):
                positions = written_positions(_also(self.settings, request))
            if response.streaming:
                self._stream_inside(response, primary=primary or wrote)
        _pin(self.settings, response, reads=reads, positions=positions)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Handle ``request`` inside the block, in this task (no thread hop)."""
        given = self._call_resolver(request)
        if inspect.isawaitable(given):
            given = await given
        reads = self._reads(given, request)
        primary = reads is True
        get_response = cast("AsyncGetResponse", self.get_response)
        with _needing(reads=reads), self.block, self._read_scope(primary=primary):
            response = await get_response(request)
            wrote = has_written()  # to this primary, or a tenant's inside
            positions = None
            if _pins(self.settings, request, wrote=wrote, primary=primary):
                # In the async ORM's thread, where the request's writes ran.
                positions = await sync_to_async(written_positions)(_also(self.settings, request))
            if response.streaming:
                self._stream_inside(response, primary=primary or wrote)
        _pin(self.settings, response, reads=reads, positions=positions)
        return response

    def _read_scope(self, *, primary: bool) -> AbstractContextManager[None]:
        """Inside the request's block: what sends its reads to the primary, if they go there."""
        if not primary or read_primaries():  # read_primaries(): until the block exits
            return _NO_SCOPE
        return use_primary()  # inside an enclosing block: for this request only

    def _call_resolver(self, request: HttpRequest) -> object:
        return None if self.settings.resolver is None else self.settings.resolver(request)

    def _call_sync_resolver(self, request: HttpRequest) -> object:
        return sync_answer(self._call_resolver(request), SETTING)

    def _reads(self, given: object, request: HttpRequest) -> bool | Needs:
        """Return whether the request's reads go to the primary, or what a replica needs."""
        if given is None:
            if request.method not in SAFE_METHODS:
                return True
        elif given == _PRIMARY:
            return True
        elif given != _REPLICA:
            msg = (
                f"The resolver of settings.{SETTING} returned {given!r} for {request.method} "
                f"{request.path}: it must return 'primary', 'replica' or None."
            )
            raise UsageError(msg)
        # A replica request, unless the client wrote lately.
        return self._pinned_by_cookie(request)

    def _pinned_by_cookie(self, request: HttpRequest) -> bool | Needs:
        """Return what the request's valid pin cookie says: a time pin, positions, or none."""
        config = self.settings
        if not config.pin_seconds:
            return False
        pin = _carried_pin(request, config.cookie_name, config.pin_seconds, config.position_seconds)
        if pin is None:
            return False
        if pin is not True:
            return pin  # reads wait for a replica to replay these positions
        if _switches.listening:
            observe.reads_pinned.send_robust(
                sender=PrimaryReplica, primary=self.settings.policy.primary, reason="cookie"
            )
        return True

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
        stream_in(response, block)


#: Pin cookies whose signature was found valid, by (cookie name, value): when each
#: was signed (seconds since the epoch). A client sends the same cookie with every
#: request of its pin window; its HMAC is checked on the first (~110,000 instructions
#: with Django's signer), the others look it up here and check its age. Only a
#: value that passed the check is kept; at most ``_VERIFIED_MAX``, oldest dropped
#: first; forgotten when ``SECRET_KEY`` changes.
_VERIFIED: dict[tuple[str, str], int] = {}
_VERIFIED_MAX: Final = 4096
_VERIFYING = threading.Lock()


def _pins(
    config: PrimaryReplicaSettings, request: HttpRequest, *, wrote: bool, primary: bool
) -> bool:
    """Whether the response pins the client: after a write, or an unsafe request."""
    return bool(config.pin_seconds) and (wrote or (primary and request.method not in SAFE_METHODS))


def _also(config: PrimaryReplicaSettings, request: HttpRequest) -> str | None:
    """The primary whose position an unsafe request carries, though no write was seen."""
    return None if request.method in SAFE_METHODS else config.policy.primary


def _pin(
    config: PrimaryReplicaSettings,
    response: HttpResponseBase,
    *,
    reads: bool | Needs,
    positions: dict[str, Position] | None,
) -> None:
    """Set the pin cookie after a write; drop a position pin every replica has replayed."""
    if positions is None:
        if not isinstance(reads, bool) and _replayed_everywhere(config.policy, reads):
            response.delete_cookie(
                config.cookie_name,
                path=config.cookie["path"],
                domain=config.cookie["domain"],
                samesite=cast("_SameSite", config.cookie["samesite"]),
            )
        return
    if not isinstance(reads, bool):
        positions = {**reads, **positions}  # still needed, then this request's
    if any(by_time(position) for position in positions.values()):
        value, max_age = _TIME_PIN, config.pin_seconds
    else:
        value, max_age = _POSITIONS + pack(positions), config.position_seconds
    response.set_signed_cookie(
        config.cookie_name, value, salt=_SALT, max_age=max_age, **config.cookie
    )


def _replayed_everywhere(policy: PrimaryReplica, needs: Needs) -> bool:
    """Whether every replica of ``policy`` has replayed ``needs`` (as last asked here)."""
    if set(needs) != {policy.primary}:
        return False  # positions of other primaries: their replicas are not known here
    needed = needs[policy.primary]
    return all(reached(replayed_here(replica), needed) for replica in policy.replicas)


def _needing(*, reads: bool | Needs) -> AbstractContextManager[None]:
    """The scope that makes the request's blocks need the positions of its cookie, if any."""
    return _NO_SCOPE if isinstance(reads, bool) else Needing(reads)


def _carried_pin(
    request: HttpRequest, name: str, pin_seconds: int, position_seconds: int
) -> Needs | bool | None:
    """The pin of ``request``'s cookie ``name``, if we signed it lately enough, else ``None``.

    ``True`` for a time pin signed at most ``pin_seconds`` ago; the positions of a
    position pin signed at most ``position_seconds`` ago.
    """
    value = request.COOKIES.get(name)
    if value is None:
        return None
    # Read before the signature is checked, to know the age allowed; trusted after.
    payload = value.rsplit(":", 2)[0]
    needs = unpack(payload[len(_POSITIONS) :]) if payload.startswith(_POSITIONS) else None
    # "1", or a format of another release: a time pin.
    max_age = pin_seconds if needs is None else position_seconds
    key = (name, value)
    signed_at = _VERIFIED.get(key)
    if signed_at is None:
        if request.get_signed_cookie(name, default=None, salt=_SALT, max_age=max_age) is None:
            return None  # forged, expired, or not ours
        signed_at = _remember(key)
    if time.time() - signed_at > max_age:
        return None
    return True if needs is None else needs


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


# The id names the module of before the house's reshaping: an id only has to be stable.
setting_changed.connect(_forget_verified, dispatch_uid="dynroute.middleware._forget_verified")
