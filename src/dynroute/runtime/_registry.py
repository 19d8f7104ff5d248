"""The registry of runtime database configurations: registered on block entry, torn down on exit.

A :class:`~dynroute.DatabaseConfiguration` becomes a Django alias only while blocks on
it are active. The traps this room exists to avoid are in DJANGO_NOTES §1-4:

- **Registration** publishes the alias in ``connections.settings`` without changing a
  dict that other threads may be iterating (:mod:`dynroute.runtime._published`).
  ``settings.DATABASES`` is never touched. The entry is already
  complete (Django's defaults were filled when the configuration was built) and its
  ENGINE is loaded before anything is registered.
- **Sharing**: every block on one configuration, in any thread or task, shares one
  alias, counted; the alias goes when the last block leaves.
- **Connections are per thread**: each block connects on entry in the thread its
  queries run in (the caller's, or for ``async with`` the async ORM's), and in
  teardown mode closes and drops that thread's connection when the thread's last block
  on it leaves. Connections that other threads opened without entering a block (work
  started inside one) are closed when the alias goes. Pools are closed then too
  (:mod:`dynroute.runtime._connections`).
- **Reuse** (``CONN_MAX_AGE`` other than 0, as Django's own persistent connections):
  when the last block leaves, the alias stays registered and its connections stay open
  for the next block, checked by Django's ``close_if_unusable_or_obsolete`` on entry;
  at most ``DYNROUTE_MAX_IDLE_CONNECTIONS`` (default 128) such idle connections are
  kept, least recently used first out (the setting is read once, and again when
  Django's ``setting_changed`` signal says it changed). :func:`close_idle_connections`
  closes them all.

Failures on entry leave nothing registered and raise documented errors naming the
alias, with secrets scrubbed from the driver's message: a database or OS error is a
:class:`~dynroute.exceptions.DatabaseConnectionError`; settings the driver refuses, or
an ENGINE that cannot be loaded, a :class:`~dynroute.exceptions.ConfigurationError`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.db.backends.signals import connection_created

from dynroute import _switches, observe
from dynroute.core import DatabaseConfiguration, claim_alias, copy_structure, release_alias
from dynroute.exceptions import ConfigurationError
from dynroute.runtime._churn import ChurnWatch
from dynroute.runtime._connections import (
    Opened,
    close_here,
    close_outside,
    close_pool,
    connect_here,
    forget_detached,
    load_engine,
)
from dynroute.runtime._published import current_settings, publish, withdraw

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.dispatch import Signal

__all__ = [
    "active_aliases",
    "add_listener",
    "close_idle_connections",
    "enter",
    "leave",
    "leave_from",
    "remove_listener",
]

logger = logging.getLogger("dynroute")

#: Default bound on connections kept open for runtime configurations no block uses: a
#: worker of a few threads serving tens of tenants keeps them all (4 threads x 32).
DEFAULT_MAX_IDLE_CONNECTIONS = 128


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
    #: the connections opened under the alias, in every thread
    opened: Opened = field(init=False)
    #: open connections it held when it went idle: its share of the idle bound
    idle_weight: int = 0

    def __post_init__(self) -> None:
        self.opened = Opened(self.config.alias)

    @property
    def alias(self) -> str:
        return self.config.alias


_lock = threading.RLock()
_entries: dict[str, _Entry] = {}
#: The idle entries kept for reuse, least recently used first, and the sum of their
#: ``idle_weight``: what the bound is checked against, in constant time per exit
#: whatever the number of configurations registered.
_idle: OrderedDict[str, _Entry] = OrderedDict()
_idle_weight = 0
_listeners: list[Callable[[str, bool], None]] = []
_max_idle: int | None = None
#: Configuration signals to send, ``(signal, arguments)``, queued under the lock in
#: the order of the events and sent, in that order, once it is released (a receiver
#: may enter blocks, in any thread): see :func:`_send_events`. Filled only while a
#: signal has a receiver.
_events: list[tuple[Signal, dict[str, object]]] = []
_SENDING = threading.Lock()
#: Says when the bound closes connections still in use (under the lock).
_CHURN = ChurnWatch()


def enter(config: DatabaseConfiguration) -> None:
    """Register ``config`` if needed and connect to it in the calling thread.

    The calling thread is the one the block's queries will run in.

    Raises:
        ConfigurationError: The alias is configured in settings, or ENGINE cannot be
            loaded. Nothing is registered.
        DatabaseConnectionError: The database cannot be reached or refuses the login.
            Nothing stays registered.
    """
    load_engine(config)
    ident = threading.get_ident()
    churn: tuple[object, ...] | None = None
    with _lock:
        entry = _entries.get(config.alias)
        registered = entry is None
        if entry is None:
            entry = _register(config)
            if entry.reuse:
                churn = _CHURN.registered(config.alias, _max_idle_connections(), _kept)
        entry.active += 1
        forget_detached()
        # A connection kept idle here is checked (and replaced if obsolete); one an
        # enclosing block of this thread is using never is.
        idle_here = ident not in entry.users
        entry.users[ident] = entry.users.get(ident, 0) + 1
        if registered and _switches.listening:
            _events.append((observe.configuration_registered, _registered(entry)))
        if entry.active == 1:
            _not_idle(entry)
            # Told under the lock that counted: another thread's block on the alias
            # waits, so it cannot connect before listeners (a test case's guard)
            # know of the alias, nor hear of it out of order with an exit.
            _notify(config.alias, active=True)
    if churn is not None:
        logger.warning(*churn)  # outside the lock: a handler may do I/O
    try:
        if _events:
            _send_events()
        connect_here(config, check=entry.reuse and idle_here)
    except BaseException:
        _leave(config, failed=True)
        raise


def leave(config: DatabaseConfiguration) -> None:
    """Undo one :func:`enter` made in the calling thread."""
    _leave(config, failed=False)


def _leave(
    config: DatabaseConfiguration, *, failed: bool, owner: threading.Thread | None = None
) -> None:
    """Undo one :func:`enter` made in ``owner`` (by default the calling thread).

    After a failed one, keep nothing for reuse. Another thread's connection is closed
    from here, under the lock, so that thread cannot take it up meanwhile.
    """
    ident = _ident(owner)
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
        close = entered_here and not remaining and not keep
        if close and owner is not None:
            wrapper = entry.opened.take(owner)
            if wrapper is not None:
                close_outside(config.alias, wrapper, owner)
    if close and owner is None:
        close_here(config.alias)
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


def _ident(owner: threading.Thread | None) -> int:
    """The ident of ``owner``, or of the calling thread."""
    if owner is None:
        return threading.get_ident()
    ident = cast("int", owner.ident)  # it ran enter(), so it has one
    return ident  # noqa: RET504 - the cast on a line of its own is not mutated


def leave_from(config: DatabaseConfiguration, owner: threading.Thread) -> None:
    """Undo one :func:`enter` made in ``owner``, from the calling thread (see ``_async``)."""
    _leave(config, failed=False, owner=owner)


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
        count = sum(_unregister(entry, "idle close") for entry in list(_idle.values()))
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


def _register(config: DatabaseConfiguration) -> _Entry:
    """Publish ``config`` under its alias; the caller holds the lock."""
    alias = config.alias
    if alias in current_settings():
        msg = (
            f"The alias {alias!r} of a runtime database configuration is already in "
            "settings.DATABASES. Choose another alias= for the configuration."
        )
        raise ConfigurationError(msg)
    reuse = _reuses_connections(config)
    if reuse:
        _max_idle_connections()  # a bad setting fails here, before anything changes
    claimed = claim_alias(config)
    # A fresh copy of the containers: Django stores and may change the entry it uses.
    published = copy_structure(config.settings)
    # A mirror of itself for Django's test runner, which a test case with
    # databases = "__all__" may meet: it creates no test database for a mirror (it
    # would write settings.DATABASES[alias], which has no runtime alias), and never
    # flushes one (a runtime database is a real one).
    published["TEST"]["MIRROR"] = published["TEST"]["MIRROR"] or alias
    publish(alias, published, first=not _entries)
    entry = _Entry(config, reuse=reuse, claimed=claimed)
    _entries[alias] = entry
    return entry


def _reuses_connections(config: DatabaseConfiguration) -> bool:
    """Reuse mode: Django's persistent connections (never with a pool: that is refused)."""
    max_age: object = config.settings["CONN_MAX_AGE"]
    return max_age != 0


def _make_idle(entry: _Entry) -> None:
    """Keep ``entry``, no longer used by any block, as the most recently used idle one."""
    global _idle_weight  # noqa: PLW0603 - module state guarded by _lock
    entry.opened.prune()
    entry.idle_weight = len(entry.opened.connections())
    _idle[entry.alias] = entry
    _idle_weight += entry.idle_weight


def _not_idle(entry: _Entry) -> None:
    """Take ``entry`` out of the idle ones, if it is there (a block uses it, or it goes)."""
    global _idle_weight  # noqa: PLW0603 - module state guarded by _lock
    if _idle.pop(entry.alias, None) is not None:
        _idle_weight -= entry.idle_weight


def _unregister(entry: _Entry, reason: observe.CloseReason) -> int:
    """Close everything left under ``entry``'s alias and withdraw it; lock held.

    Returns:
        The number of connections closed.
    """
    if _switches.listening:
        _events.append((observe.configuration_closed, {"alias": entry.alias, "reason": reason}))
    _not_idle(entry)
    if entry.claimed and not entry.opened.ever:
        # Nothing ever connected under the name: no thread can hold a wrapper for
        # it, so other settings may use it (a corrected password, say).
        release_alias(entry.config)
    closed = entry.opened.close(stray=not entry.reuse)
    close_pool(entry.config)
    del _entries[entry.alias]
    withdraw(entry.alias, last=not _entries)
    return closed


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
        _unregister(entry, "eviction")
        logger.debug("closed idle runtime database %r (bound %d)", entry.alias, bound)
        _CHURN.evicted(entry.alias, entry.idle_weight)


def _kept() -> dict[str, int]:
    """The idle configurations kept now, with their connections; lock held."""
    return {alias: entry.idle_weight for alias, entry in _idle.items()}


def _on_connection_created(
    sender: object,  # noqa: ARG001 - Django's signal signature
    connection: BaseDatabaseWrapper,
    **kwargs: object,  # noqa: ARG001
) -> None:
    """Remember every wrapper that connects under a runtime alias, in any thread."""
    with _lock:
        entry = _entries.get(connection.alias)
        if entry is not None:
            entry.opened.add(connection)


connection_created.connect(_on_connection_created, dispatch_uid="dynroute-runtime-connections")
