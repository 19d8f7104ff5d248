"""Replica health, per process: a replica that fails to connect is skipped for a while.

A replica whose connection fails to open (``OperationalError``) is marked down for its
policy's ``down_seconds``, with a WARNING and ``replica_marked_down``; once that time is
over, one read (not every one at once) tries it again, and a success says so
(``replica_restored``). Marks are per process, in a dictionary read without a lock (a
dict lookup is atomic) and changed under one.

It also keeps this thread's Django connection objects by alias, which the read
decision looks at on every read (``connections[alias]`` costs more than the rest of
the decision).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from django.core.exceptions import SynchronousOnlyOperation
from django.db import OperationalError, connections

from dynroute import _switches, observe
from dynroute.replicas._positions import LAGGING

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = [
    "DOWN",
    "THREAD_CONNECTIONS",
    "Group",
    "connection",
    "connects",
    "down_now",
    "down_replicas",
    "is_down",
    "mark_up",
    "usable",
]

logger = logging.getLogger("dynroute")

#: Replicas marked down in this process: alias -> (``time.monotonic()`` until which
#: it is skipped, for how long it is skipped each time). Read without the lock;
#: changed with it.
DOWN: dict[str, tuple[float, float]] = {}
_DOWN_LOCK = threading.Lock()

#: This thread's Django connection objects by alias. ``connections[alias]`` costs
#: 1.6 µs (asgiref's Local), more than the rest of a read decision; the object Django
#: gives a thread for an alias does not change while it is connected, and a cached
#: one that is not connected is looked up again before it is used to connect.
THREAD_CONNECTIONS = threading.local()


class Group(Protocol):
    """What :func:`usable` and :func:`connects` need of a ``PrimaryReplica``."""

    @property
    def primary(self) -> str: ...
    @property
    def replicas(self) -> tuple[str, ...]: ...
    @property
    def down_seconds(self) -> float: ...


def _fresh_connection(alias: str) -> BaseDatabaseWrapper:
    """Look up this thread's connection object for ``alias`` and cache it."""
    wrapper = connections[alias]
    setattr(THREAD_CONNECTIONS, alias, wrapper)
    return wrapper


def connection(alias: str) -> BaseDatabaseWrapper:
    """This thread's connection object for ``alias``, from the cache or looked up."""
    cached: BaseDatabaseWrapper | None = THREAD_CONNECTIONS.__dict__.get(alias)
    return cached if cached is not None else _fresh_connection(alias)


def usable(group: Group, first: str | None = None, *, skip: str | None = None) -> str:
    """Return a replica of ``group`` whose connection opens here, else its primary.

    ``first`` (already found up by the caller) is tried first, then the other
    replicas that are neither down nor lagging, except ``skip``. A replica whose connection fails
    with ``OperationalError`` is marked down for ``down_seconds``, with a WARNING.
    The signals are sent by ``type(group)``: ``PrimaryReplica``.
    """
    sender = type(group)
    if first is not None and _connects(first, group.down_seconds, sender):
        return first
    for candidate in group.replicas:
        if candidate in (first, skip) or candidate in LAGGING or is_down(candidate):
            continue
        if _connects(candidate, group.down_seconds, sender):
            return candidate
    return group.primary


def is_down(alias: str) -> bool:
    """Return whether ``alias`` is to be skipped now, claiming its retry once it is due.

    Once its time is over, the first caller claims the retry: it sees the replica as
    up and tries it; the others keep skipping it for another ``down_seconds``.
    """
    mark = DOWN.get(alias)
    if mark is None:
        return False
    until, seconds = mark
    now = time.monotonic()
    if now < until:
        return True
    with _DOWN_LOCK:
        if DOWN.get(alias) is not mark:
            return True  # another caller claimed the retry
        DOWN[alias] = (now + seconds, seconds)
    return False


def down_now(alias: str) -> bool:
    """Return whether ``alias`` is marked down and not yet due for a retry (claims nothing)."""
    mark = DOWN.get(alias)
    return mark is not None and time.monotonic() < mark[0]


def connects(alias: str, group: Group) -> bool:
    """Open this thread's connection to replica ``alias`` of ``group``; mark it down on failure."""
    return _connects(alias, group.down_seconds, type(group))


def _connects(alias: str, down_seconds: float, sender: type) -> bool:
    """Open this thread's connection to ``alias``; mark it down if that fails."""
    opened = _fresh_connection(alias)
    try:
        opened.ensure_connection()
    except SynchronousOnlyOperation:
        return True  # an event loop's thread: the query itself runs elsewhere
    except OperationalError as error:
        _mark_down(alias, down_seconds, error, sender)
        return False
    if alias in DOWN:
        with _DOWN_LOCK:
            # Another thread may have restored it since the test above: one says so.
            restored = DOWN.pop(alias, None) is not None
        if restored:
            logger.warning("dynroute: replica %r is back up: reads go to it again", alias)
            if _switches.listening:
                observe.replica_restored.send_robust(sender=sender, alias=alias)
    return True


def _mark_down(alias: str, down_seconds: float, error: OperationalError, sender: type) -> None:
    with _DOWN_LOCK:
        first = alias not in DOWN
        DOWN[alias] = (time.monotonic() + down_seconds, down_seconds)
    logger.warning(
        "dynroute: replica %r is down (%s on connect): %s for %g s",
        alias,
        type(error).__name__,
        "skipping it" if first else "still down, skipping it again",
        down_seconds,
    )
    if _switches.listening:
        observe.replica_marked_down.send_robust(
            sender=sender, alias=alias, seconds=down_seconds, error=type(error).__name__
        )


def mark_up(alias: str | None = None) -> None:
    """Forget that ``alias`` (or every replica) is down; for tests and operators."""
    with _DOWN_LOCK:
        if alias is None:
            DOWN.clear()
        else:
            DOWN.pop(alias, None)


def down_replicas() -> dict[str, float]:
    """Return the replicas marked down, with the seconds until each is tried again."""
    now = time.monotonic()
    return {alias: max(0.0, until - now) for alias, (until, _) in DOWN.items()}
