"""Runtime database configurations: registered on block entry, torn down on exit.

A :class:`~dynroute.DatabaseConfiguration` becomes a Django alias only while blocks on
it are active. The traps this module exists to avoid are in DJANGO_NOTES §1-4:

- **Registration** publishes the alias in ``connections.settings`` without changing a
  dict that other threads may be iterating: the first runtime alias replaces Django's
  dict with a :class:`_Published` mapping, which adds and removes aliases in constant
  time and iterates safely while they change (DJANGO_NOTES §2); the last one gone puts
  Django's dict back. ``settings.DATABASES`` is never touched. The entry is already
  complete (Django's defaults were filled when the configuration was built) and its
  ENGINE is loaded before anything is registered.
- **Sharing**: every block on one configuration, in any thread or task, shares one
  alias, counted; the alias goes when the last block leaves.
- **Connections are per thread**: each block connects on entry in the thread its
  queries run in (the caller's, or for ``async with`` the async ORM's), and in
  teardown mode closes and drops that thread's connection when the thread's last block
  on it leaves. Connections that other threads opened without entering a block (work
  started inside one) are closed when the alias goes. Pools are closed then too.
- **Reuse** (``CONN_MAX_AGE`` other than 0, as Django's own persistent connections):
  when the last block leaves, the alias stays registered and its connections stay open
  for the next block, checked by Django's ``close_if_unusable_or_obsolete`` on entry;
  at most ``DYNROUTE_MAX_IDLE_CONNECTIONS`` (default 16) such idle connections are
  kept, least recently used first out (the setting is read once, and again when
  Django's ``setting_changed`` signal says it changed). :func:`close_idle_connections`
  closes them all.

Failures on entry leave nothing registered and raise documented errors naming the
alias, with secrets scrubbed from the driver's message: a database or OS error is a
:class:`~dynroute.exceptions.DatabaseConnectionError`; settings the driver refuses, or
an ENGINE that cannot be loaded, a :class:`~dynroute.exceptions.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import ItemsView, Mapping, MutableMapping, ValuesView
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast, final

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.utils import load_backend

from dynroute import _signals
from dynroute._settings import copy_structure
from dynroute._targets import DatabaseConfiguration, claim_alias, release_alias
from dynroute.exceptions import ConfigurationError, DatabaseConnectionError, DynrouteError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from django.dispatch import Signal

__all__ = [
    "active_aliases",
    "add_listener",
    "aenter",
    "aleave",
    "close_idle_connections",
    "enter",
    "leave",
    "remove_listener",
]

logger = logging.getLogger("dynroute")

#: Default bound on connections kept open for runtime configurations no block uses.
DEFAULT_MAX_IDLE_CONNECTIONS = 16

# OPTIONS keys whose values are secrets, for scrubbing driver messages.
_SECRET_OPTION = re.compile(r"pass|secret|token|key", re.IGNORECASE)


@dataclass(eq=False, repr=False)
class _Entry:
    """The state of one registered runtime alias."""

    config: DatabaseConfiguration
    reuse: bool
    #: whether registering bound a chosen alias to these settings (see claim_alias)
    claimed: bool = False
    active: int = 0
    #: thread ident -> blocks whose queries run in that thread
    users: dict[int, int] = field(default_factory=dict[int, int])
    #: every wrapper that connected under this alias -> the thread it belongs to
    opened: weakref.WeakKeyDictionary[BaseDatabaseWrapper, int] = field(
        default_factory=weakref.WeakKeyDictionary[BaseDatabaseWrapper, int]
    )
    #: open connections it held when it went idle: its share of the idle bound
    idle_weight: int = 0

    @property
    def alias(self) -> str:
        return self.config.alias

    def open_connections(self) -> list[tuple[BaseDatabaseWrapper, int]]:
        return [
            (wrapper, thread)
            for wrapper, thread in list(self.opened.items())
            if wrapper.connection is not None
        ]


_lock = threading.RLock()
_entries: dict[str, _Entry] = {}
#: The idle entries kept for reuse, least recently used first, and the sum of their
#: ``idle_weight``: what the bound is checked against, in constant time per exit
#: whatever the number of configurations registered.
_idle: OrderedDict[str, _Entry] = OrderedDict()
_idle_weight = 0
_loaded_engines: set[str] = set()
_listeners: list[Callable[[str, bool], None]] = []
_max_idle: int | None = None
#: Configuration signals to send, ``(signal, arguments)``, queued under the lock in
#: the order of the events and sent, in that order, once it is released (a receiver
#: may enter blocks, in any thread): see :func:`_send_events`. Filled only while a
#: signal has a receiver.
_events: list[tuple[Signal, dict[str, object]]] = []
_SENDING = threading.Lock()
# The settings dict Django had before the first runtime alias; restored when the last
# one goes, so connections.settings is settings.DATABASES again when nothing runs.
_base_settings: dict[str, dict[str, Any]] | None = None


def enter(config: DatabaseConfiguration) -> None:
    """Register ``config`` if needed and connect to it in the calling thread.

    The calling thread is the one the block's queries will run in.

    Raises:
        ConfigurationError: The alias is configured in settings, or ENGINE cannot be
            loaded. Nothing is registered.
        DatabaseConnectionError: The database cannot be reached or refuses the login.
            Nothing stays registered.
    """
    _load_engine(config)
    ident = threading.get_ident()
    with _lock:
        entry = _entries.get(config.alias)
        registered = entry is None
        if entry is None:
            entry = _register(config)
        entry.active += 1
        entry.users[ident] = entry.users.get(ident, 0) + 1
        if registered and _signals.listening:
            _events.append((_signals.configuration_registered, _registered(entry)))
        if entry.active == 1:
            _not_idle(entry)
            # Told under the lock that counted: another thread's block on the alias
            # waits, so it cannot connect before listeners (a test case's guard)
            # know of the alias, nor hear of it out of order with an exit.
            _notify(config.alias, active=True)
    try:
        if _events:
            _send_events()
        _connect_here(entry)
    except BaseException:
        _leave(config, failed=True)
        raise


def leave(config: DatabaseConfiguration) -> None:
    """Undo one :func:`enter` made in the calling thread."""
    _leave(config, failed=False)


def _leave(config: DatabaseConfiguration, *, failed: bool) -> None:
    """Undo one :func:`enter`; after a failed one, keep nothing for reuse."""
    ident = threading.get_ident()
    with _lock:
        entry = _entries[config.alias]
        # A block left in another thread than it entered (a misuse the route stack
        # reports) has no count here; its connection is closed when the alias goes.
        entered_here = ident in entry.users
        remaining = entry.users.get(ident, 1) - 1
        if remaining:
            entry.users[ident] = remaining
        elif entered_here:
            del entry.users[ident]
    keep = entry.reuse and not failed
    if entered_here and not remaining and not keep:
        _close_here(config.alias)
    with _lock:
        entry.active -= 1
        if entry.active == 0:
            if keep:
                _make_idle(entry)
            else:
                _unregister(entry, "last block")
            _notify(config.alias, active=False)
            if keep:
                # Last: a setting changed to a bad value mid-block raises here, with
                # the bookkeeping done.
                _enforce_idle_bound()
    if _events:
        _send_events()


async def aenter(config: DatabaseConfiguration) -> None:
    """:func:`enter`, in the thread the async ORM runs in for the calling task."""
    await _in_orm_thread(enter, config, undo=leave)


async def aleave(config: DatabaseConfiguration) -> None:
    """:func:`leave`, in the thread the async ORM runs in for the calling task."""
    await _in_orm_thread(leave, config)


def close_idle_connections() -> int:
    """Close every connection to a runtime configuration that no block is using.

    Configurations in reuse mode (``CONN_MAX_AGE`` other than 0) keep their alias and
    connections after their last block, for the next one. Call this when a worker
    shuts down, at the end of a thread you started, or between tests: it closes those
    connections, in every thread, and unregisters their aliases. Blocks that are
    active are not touched.

    Returns:
        The number of connections closed.
    """
    with _lock:
        count = sum(_evict(entry, "idle close") for entry in list(_idle.values()))
    if _events:
        _send_events()
    return count


def active_aliases() -> frozenset[str]:
    """The runtime aliases registered now, active or idle."""
    with _lock:
        return frozenset(_entries)


def add_listener(listener: Callable[[str, bool], None]) -> None:
    """Call ``listener(alias, active)`` when an alias gets its first or loses its last block."""
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[str, bool], None]) -> None:
    """Stop calling ``listener``."""
    with _lock:
        _listeners.remove(listener)


def _notify(alias: str, *, active: bool) -> None:
    """Tell the listeners; the caller holds the lock under which it counted blocks."""
    for listener in _listeners:
        listener(alias, active)


def _load_engine(config: DatabaseConfiguration) -> None:
    """Import the backend now, so a bad ENGINE fails before anything is registered."""
    engine = config.settings["ENGINE"]
    if engine in _loaded_engines:
        return
    try:
        load_backend(engine)
    except Exception as error:  # any import failure: ImproperlyConfigured, TypeError...
        shown = engine if len(engine) <= 80 else engine[:77] + "..."
        msg = (
            f"Cannot load ENGINE {shown!r} of runtime database {config.alias!r}: "
            f"{type(error).__name__}: {str(error)[:500]}"
        )
        raise ConfigurationError(msg) from error
    _loaded_engines.add(engine)


def _register(config: DatabaseConfiguration) -> _Entry:
    """Publish ``config`` under its alias; the caller holds the lock."""
    global _base_settings  # noqa: PLW0603 - module state guarded by _lock
    alias = config.alias
    current = _settings()
    if alias in current:
        msg = (
            f"The alias {alias!r} of a runtime database configuration is already in "
            "settings.DATABASES. Choose another alias= for the configuration."
        )
        raise ConfigurationError(msg)
    reuse = _reuses_connections(config)
    if reuse:
        _max_idle_connections()  # a bad setting fails here, before anything changes
    claimed = claim_alias(config)
    if type(current) is _Published:
        published = current
    else:
        if not _entries:
            _base_settings = connections.settings  # Django's own dict, put back at the end
        published = _Published(current)
        # Django reads it as the dict it made: a Mapping with every method it calls.
        connections.settings = cast("dict[str, dict[str, Any]]", published)
    # A fresh copy of the containers: Django stores and may change the entry it uses.
    published.add(alias, copy_structure(config.settings))
    entry = _Entry(config, reuse=reuse, claimed=claimed)
    _entries[alias] = entry
    return entry


def _settings() -> Mapping[str, dict[str, Any]]:
    """``connections.settings``: Django's dict, or a :class:`_Published` (typed as a dict)."""
    return connections.settings


#: A removed alias's place in :class:`_Published`'s order: never a key (a NUL in it).
_HOLE: Final = "\x00removed"


@final
class _Published(MutableMapping[str, dict[str, Any]]):
    """``connections.settings`` while runtime aliases are registered.

    Other threads look aliases up and iterate them (``close_old_connections`` and
    ``make_view_atomic`` on every request) while blocks add and remove them. A dict
    changed in place raises "dictionary changed size during iteration" in them, and
    a new dict per change costs time in the number of aliases. Here lookups go to a
    dict and iteration to a list of the aliases in order: a list may grow under an
    iterator, and a removed alias leaves a hole there, skipped; when holes are half
    of it, a new list replaces it (iterators keep the old one). dynroute changes it
    under the module's lock; code that assigns into ``connections.databases`` (as
    django-dynamic-db-router and some test helpers do) changes it as it would the dict.
    """

    __slots__ = ("_entries", "_holes", "_order", "_places")

    def __init__(self, base: Mapping[str, dict[str, Any]]) -> None:
        self._entries = dict(base)
        self._order = list(self._entries)
        self._places = {alias: place for place, alias in enumerate(self._order)}
        self._holes = 0

    def __getitem__(self, alias: str) -> dict[str, Any]:
        return self._entries[alias]

    def __contains__(self, alias: object) -> bool:
        return alias in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        entries = self._entries
        # The list as it is now: a new one made later does not change this iteration.
        return (alias for alias in self._order if alias in entries)

    def items(self) -> ItemsView[str, dict[str, Any]]:
        """The (alias, settings) pairs, as iterating, never a removed alias's."""
        return _PublishedItems(self)

    def values(self) -> ValuesView[dict[str, Any]]:
        """The settings, as iterating, never a removed alias's."""
        return _PublishedValues(self)

    def pairs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Iterate (alias, settings); an alias removed meanwhile is skipped, not a KeyError."""
        entries = self._entries
        for alias in self._order:
            settings = entries.get(alias)
            if settings is not None:
                yield alias, settings

    def __repr__(self) -> str:
        return f"<dynroute's connections.settings: {', '.join(map(repr, self))}>"

    def __setitem__(self, alias: str, settings: dict[str, Any]) -> None:
        if alias in self._entries:
            self._entries[alias] = settings
        else:
            self.add(alias, settings)

    def __delitem__(self, alias: str) -> None:
        self.remove(alias)

    def add(self, alias: str, settings: dict[str, Any]) -> None:
        self._entries[alias] = settings
        self._places[alias] = len(self._order)
        self._order.append(alias)

    def remove(self, alias: str) -> None:
        del self._entries[alias]
        self._order[self._places.pop(alias)] = _HOLE
        self._holes += 1
        if self._holes > 16 and self._holes * 2 > len(self._order):
            self._order = list(self._entries)
            self._places = {name: place for place, name in enumerate(self._order)}
            self._holes = 0


class _PublishedItems(ItemsView[str, dict[str, Any]]):
    """``_Published.items()``: iterating looks each alias up once, as it goes."""

    __slots__ = ()
    _mapping: _Published

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._mapping.pairs()


class _PublishedValues(ValuesView[dict[str, Any]]):
    """``_Published.values()``: as :class:`_PublishedItems`."""

    __slots__ = ()
    _mapping: _Published

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (settings for _, settings in self._mapping.pairs())


def _reuses_connections(config: DatabaseConfiguration) -> bool:
    """Reuse mode: Django's persistent connections (never with a pool: that is refused)."""
    max_age: object = config.settings["CONN_MAX_AGE"]
    return max_age != 0


def _make_idle(entry: _Entry) -> None:
    """Keep ``entry``, no longer used by any block, as the most recently used idle one."""
    global _idle_weight  # noqa: PLW0603 - module state guarded by _lock
    entry.idle_weight = len(entry.open_connections())
    _idle[entry.alias] = entry
    _idle_weight += entry.idle_weight


def _not_idle(entry: _Entry) -> None:
    """Take ``entry`` out of the idle ones, if it is there (a block uses it, or it goes)."""
    global _idle_weight  # noqa: PLW0603 - module state guarded by _lock
    if _idle.pop(entry.alias, None) is not None:
        _idle_weight -= entry.idle_weight


def _unregister(entry: _Entry, reason: _signals.CloseReason) -> None:
    """Close everything left under ``entry``'s alias and withdraw it; lock held."""
    if _signals.listening:
        _events.append((_signals.configuration_closed, {"alias": entry.alias, "reason": reason}))
    _not_idle(entry)
    if entry.claimed and not entry.opened:
        # Nothing ever connected under the name: no thread can hold a wrapper for
        # it, so other settings may use it (a corrected password, say).
        release_alias(entry.config)
    _close_everywhere(entry, stray=not entry.reuse)
    _close_pool(entry)
    alias = entry.alias
    del _entries[alias]
    published = _settings()
    if type(published) is _Published:
        published.remove(alias)
    else:  # replaced by someone else since it was registered: copy-on-write
        published = {name: value for name, value in published.items() if name != alias}
        connections.settings = published
    if (
        not _entries
        and _base_settings is not None
        and published.keys() == _base_settings.keys()
        and all(published[name] is value for name, value in _base_settings.items())
    ):
        connections.settings = _base_settings


def _evict(entry: _Entry, reason: _signals.CloseReason) -> int:
    """Close and unregister an idle entry; return how many connections it had."""
    count = len(entry.open_connections())
    _unregister(entry, reason)
    return count


def _registered(entry: _Entry) -> dict[str, object]:
    """The arguments of :data:`~dynroute.signals.configuration_registered`: no secret."""
    settings = entry.config.settings
    return {
        "alias": entry.alias,
        "engine": settings["ENGINE"],
        "name": settings["NAME"],
        "host": settings["HOST"],
        "reuse": entry.reuse,
    }


def _send_events() -> None:
    """Send the queued configuration signals in order, with the lock released.

    One thread sends at a time, so receivers hear of an alias registered, closed and
    registered again in that order. A thread that finds another one sending leaves
    its events to it: the sender empties the queue before it stops, and looks again
    once it has stopped.
    """
    while _events and _SENDING.acquire(blocking=False):
        try:
            while True:
                with _lock:
                    batch = _events[:]
                    _events.clear()
                if not batch:
                    break
                for signal, arguments in batch:
                    signal.send_robust(sender=DatabaseConfiguration, **arguments)
        finally:
            _SENDING.release()


def _max_idle_connections() -> int:
    """``DYNROUTE_MAX_IDLE_CONNECTIONS``, checked; read once until the setting changes.

    Raises:
        ConfigurationError: The setting is not a whole number, 0 or more.
    """
    global _max_idle  # noqa: PLW0603 - a cache, cleared by _on_setting_changed
    bound = _max_idle
    if bound is None:
        # A missing setting costs Django an AttributeError (microseconds) per read.
        value: object = getattr(
            django_settings, "DYNROUTE_MAX_IDLE_CONNECTIONS", DEFAULT_MAX_IDLE_CONNECTIONS
        )
        if type(value) is not int or value < 0:  # not a bool either
            msg = (
                "DYNROUTE_MAX_IDLE_CONNECTIONS must be a whole number of connections, "
                f"0 or more (default {DEFAULT_MAX_IDLE_CONNECTIONS}); it is {value!r:.80}."
            )
            raise ConfigurationError(msg)
        _max_idle = bound = value
    return bound


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:  # noqa: ARG001 - Django's signal signature
    """Forget the cached bound when tests override it (``override_settings``...)."""
    global _max_idle  # noqa: PLW0603 - the cache of _max_idle_connections
    if setting == "DYNROUTE_MAX_IDLE_CONNECTIONS":
        _max_idle = None


setting_changed.connect(_on_setting_changed, dispatch_uid="dynroute-max-idle-connections")


def _enforce_idle_bound() -> None:
    """Evict least recently used idle entries beyond the bound; lock held.

    Every block exit in reuse mode gets here: the check is one comparison, and each
    eviction takes the oldest idle entry, whatever the number registered.
    """
    bound = _max_idle_connections()
    while _idle_weight > bound:
        entry = next(iter(_idle.values()))
        _evict(entry, "eviction")
        logger.debug("closed idle runtime database %r (bound %d)", entry.alias, bound)


def _connect_here(entry: _Entry) -> None:
    """Connect (or check a kept connection) in the calling thread.

    Whatever the driver raises becomes a documented error, raised without the
    driver's frames (they hold the connection parameters): a database error or an
    OS error is a :class:`DatabaseConnectionError`; anything else (a driver refusing
    a setting: ``TypeError``, ``ValueError``, ``ImproperlyConfigured``...) is a
    :class:`ConfigurationError`. ``AssertionError`` passes through: it is how Django's
    test cases refuse connections (see :mod:`dynroute.testing`).
    """
    wrapper = connections[entry.alias]
    try:
        if entry.reuse:
            wrapper.close_if_unusable_or_obsolete()
        if wrapper.connection is None:
            wrapper.ensure_connection()
    except (DatabaseError, OSError) as error:
        failure: DynrouteError = DatabaseConnectionError(
            _describe_failure(entry.config, error, "Could not connect to")
        )
    except AssertionError:
        raise
    except Exception as error:  # noqa: BLE001 - drivers raise anything for bad settings
        failure = ConfigurationError(
            _describe_failure(entry.config, error, "The driver refused the settings of")
        )
    else:
        return
    raise failure from None


def _describe_failure(config: DatabaseConfiguration, error: Exception, what: str) -> str:
    """Say which database failed and why, with every secret scrubbed."""
    settings = config.settings
    where = ", ".join(
        f"{key} {str(settings[key])[:80]!r}"
        for key in ("NAME", "HOST", "PORT")
        if settings.get(key)
    )
    reason = str(error)
    for secret in _secrets(config):
        reason = reason.replace(secret, "********")
    reason = reason.strip()[:500]
    return (
        f"{what} the runtime database {config.alias!r} ({where}): {type(error).__name__}: {reason}"
    )


def _secrets(config: DatabaseConfiguration) -> list[str]:
    values = [config.settings["PASSWORD"]]
    values.extend(
        value
        for key, value in config.settings["OPTIONS"].items()
        if isinstance(value, str) and _SECRET_OPTION.search(str(key))
    )
    return [value for value in values if value]


def _close_here(alias: str) -> None:
    """Close and drop the calling thread's connection to ``alias``."""
    wrapper = connections[alias]
    raw = wrapper.connection
    try:
        wrapper.close()
    except DatabaseError as error:
        # Closing a broken connection can fail; Django then forgets the driver's
        # connection without closing it, so close that directly.
        logger.warning("closing runtime database %r failed: %s", alias, type(error).__name__)
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
    finally:
        del connections[alias]


def _close_everywhere(entry: _Entry, *, stray: bool) -> None:
    """Close what is still open under ``entry``'s alias, in every thread; lock held.

    The calling thread's connection is closed properly. Another thread's cannot be
    (Django wrappers belong to their thread), so its DB-API connection is closed and
    the wrapper reset to reconnect if that thread ever uses it again; no block is
    using any of them at this point.
    """
    me = threading.get_ident()
    for wrapper, owner in entry.open_connections():
        if owner == me:
            _close_here(entry.alias)
            continue
        if stray:
            logger.warning(
                "closing a connection to runtime database %r left open by another thread: "
                "work started inside a block should finish inside it",
                entry.alias,
            )
        raw, wrapper.connection = wrapper.connection, None
        try:
            raw.close()
        except Exception as error:  # noqa: BLE001 - a dead connection may fail to close; it is gone
            logger.warning(
                "closing runtime database %r failed: %s", entry.alias, type(error).__name__
            )


def _close_pool(entry: _Entry) -> None:
    """Close the connection pool of ``entry``'s alias, if it has one; lock held."""
    if not entry.config.settings["OPTIONS"].get("pool"):
        return
    wrapper = connections[entry.alias]
    close_pool: Callable[[], None] | None = getattr(wrapper, "close_pool", None)
    try:
        if close_pool is not None:
            close_pool()
    finally:
        del connections[entry.alias]


def _on_connection_created(
    sender: object,  # noqa: ARG001 - Django's signal signature
    connection: BaseDatabaseWrapper,
    **kwargs: object,  # noqa: ARG001
) -> None:
    """Remember every wrapper that connects under a runtime alias, in any thread."""
    with _lock:
        entry = _entries.get(connection.alias)
        if entry is not None:
            entry.opened[connection] = threading.get_ident()


connection_created.connect(_on_connection_created, dispatch_uid="dynroute-runtime-connections")


async def _in_orm_thread(
    function: Callable[[DatabaseConfiguration], None],
    config: DatabaseConfiguration,
    *,
    undo: Callable[[DatabaseConfiguration], None] | None = None,
) -> None:
    """Run ``function(config)`` where the async ORM runs this task's queries.

    The call runs to completion even if the task is cancelled meanwhile, so that the
    bookkeeping is never left half done; then, if ``undo`` is given and the call
    succeeded, ``undo`` runs the same way before the cancellation is re-raised.
    """
    call = asyncio.ensure_future(sync_to_async(function)(config))
    cancelled = await _wait_through_cancellation(call)
    if cancelled:
        if undo is not None and call.exception() is None:
            await _wait_through_cancellation(asyncio.ensure_future(sync_to_async(undo)(config)))
        raise asyncio.CancelledError
    call.result()


async def _wait_through_cancellation(call: Awaitable[None]) -> bool:
    """Wait for ``call`` to finish; return whether the waiting task was cancelled."""
    future = asyncio.ensure_future(call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:  # noqa: PERF203 - each cancellation is recorded, the wait goes on
            cancelled = True
    return cancelled
