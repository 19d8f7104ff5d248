"""Connecting to a runtime configuration and closing what it opened, in every thread.

Connections are per thread (DJANGO_NOTES §3): a block connects in the thread its
queries run in (the caller's, or for ``async with`` the async ORM's), and closes there.
What another thread opened is closed from the outside when the alias goes. Failures
become documented errors, with every secret scrubbed from the driver's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connections
from django.db.utils import load_backend

from dynroute.exceptions import ConfigurationError, DatabaseConnectionError, DynrouteError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from django.db.backends.base.base import BaseDatabaseWrapper

    from dynroute.core import DatabaseConfiguration

__all__ = [
    "Opened",
    "close_everywhere",
    "close_here",
    "close_outside",
    "close_pool",
    "connect_here",
    "forget_detached",
    "in_orm_thread",
    "load_engine",
    "scrub",
]

logger = logging.getLogger("dynroute")
_T = TypeVar("_T")

# OPTIONS keys whose values are secrets, for scrubbing driver messages.
_SECRET_OPTION = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_loaded_engines: set[str] = set()


def load_engine(config: DatabaseConfiguration) -> None:
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


def connect_here(config: DatabaseConfiguration, *, check: bool) -> None:
    """Connect in the calling thread, or, with ``check``, check the connection kept there.

    ``check`` is for a connection kept idle for reuse: Django's
    ``close_if_unusable_or_obsolete`` closes it if it is too old or broken, as Django
    does with its own between requests. Never one in use: not one an enclosing block
    of this thread uses (the caller knows), nor one inside a transaction (a test
    case's), which Django would close as "autocommit off".

    Whatever the driver raises becomes a documented error, raised without the
    driver's frames (they hold the connection parameters): a database error or an
    OS error is a :class:`DatabaseConnectionError`; anything else (a driver refusing
    a setting: ``TypeError``, ``ValueError``, ``ImproperlyConfigured``...) is a
    :class:`ConfigurationError`. ``AssertionError`` passes through: it is how Django's
    test cases refuse connections (see :mod:`dynroute.testing`).
    """
    wrapper = connections[config.alias]
    try:
        if check and not wrapper.in_atomic_block:
            wrapper.close_if_unusable_or_obsolete()
        if wrapper.connection is None:
            wrapper.ensure_connection()
    except (DatabaseError, OSError) as error:
        failure: DynrouteError = DatabaseConnectionError(
            _describe_failure(config, error, "Could not connect to")
        )
    except AssertionError:
        raise
    except Exception as error:  # noqa: BLE001 - drivers raise anything for bad settings
        failure = ConfigurationError(
            _describe_failure(config, error, "The driver refused the settings of")
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
    reason = scrub(str(error), settings).strip()[:500]
    return (
        f"{what} the runtime database {config.alias!r} ({where}): {type(error).__name__}: {reason}"
    )


def scrub(text: str, settings: Mapping[str, object]) -> str:
    """``text`` with the password and the secret-looking options of ``settings`` masked."""
    values: list[object] = [settings.get("PASSWORD")]
    options = settings.get("OPTIONS")
    if isinstance(options, Mapping):
        values.extend(
            value
            for key, value in cast("Mapping[object, object]", options).items()
            if _SECRET_OPTION.search(str(key))
        )
    for secret in values:
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "********")
    return text


def close_here(alias: str) -> None:
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


def close_everywhere(
    alias: str, opened: Iterable[tuple[BaseDatabaseWrapper, threading.Thread]], *, stray: bool
) -> None:
    """Close the connections ``opened`` under ``alias`` (with their threads), in every thread.

    The calling thread's connection is closed properly; another thread's as
    :func:`close_outside` does. No block is using any of them at this point.
    """
    me = threading.current_thread()
    for wrapper, owner in opened:
        if owner is me:
            close_here(alias)
            continue
        if stray:
            logger.warning(
                "closing a connection to runtime database %r left open by another thread: "
                "work started inside a block should finish inside it",
                alias,
            )
        close_outside(alias, wrapper, owner)


#: Wrappers closed by :func:`close_outside`, left in their thread's ``connections``:
#: thread -> (alias, wrapper). The registry's lock guards it.
_detached: dict[threading.Thread, list[tuple[str, BaseDatabaseWrapper]]] = {}


def close_outside(alias: str, wrapper: BaseDatabaseWrapper, owner: threading.Thread) -> None:
    """Close the connection ``owner`` holds to ``alias``, from another thread.

    Django's ``close()`` refuses another thread (and an event loop's), so the DB-API
    connection is closed directly; the next ``connect()`` would reset the wrapper's
    state. The wrapper stays in ``owner``'s ``connections`` until
    :func:`forget_detached` runs there, or ``owner`` ends (under ASGI, Django runs each
    request's sync code in a thread of its own). Used for an ``async with`` block's
    exit, whose queries ran in the async ORM's thread (``owner``), and for the
    connections other threads left when an alias goes.
    """
    raw, wrapper.connection = wrapper.connection, None
    try:
        raw.close()
    except Exception as error:  # noqa: BLE001 - a dead connection may fail to close; it is gone
        logger.warning("closing runtime database %r failed: %s", alias, type(error).__name__)
    for thread in [thread for thread in _detached if not thread.is_alive()]:
        del _detached[thread]
    _detached.setdefault(owner, []).append((alias, wrapper))


def forget_detached() -> None:
    """Drop the calling thread's wrappers that :func:`close_outside` closed.

    Called before each entry connects: a thread that outlives its blocks (a shared
    sync thread) keeps no wrapper of an alias it no longer uses, and connects under
    a fresh one. One that a stray query reconnected meanwhile is left to the registry.
    """
    if not _detached:
        return
    for alias, wrapper in _detached.pop(threading.current_thread(), ()):
        if wrapper.connection is None:
            with contextlib.suppress(AttributeError):  # already gone from this thread
                del connections[alias]


class Opened:
    """The connections opened under one runtime alias, in every thread, with their threads.

    Held, not weakly: the connection of a thread that has ended is closed here (see
    :meth:`prune`), never left open until the garbage collector gets to it (a
    ResourceWarning, and a server session held meanwhile). The registry's lock guards it.
    """

    __slots__ = ("_wrappers", "alias", "ever")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        #: whether anything ever connected under the alias
        self.ever = False
        self._wrappers: dict[BaseDatabaseWrapper, threading.Thread] = {}

    def add(self, wrapper: BaseDatabaseWrapper) -> None:
        """Remember ``wrapper``, which has just connected in the calling thread.

        The connections of threads that have ended are closed then too: an alias that
        blocks keep active from thread to thread (a thread per request) never goes idle.
        """
        self.prune()
        self._wrappers[wrapper] = threading.current_thread()
        self.ever = True

    def connections(self) -> list[tuple[BaseDatabaseWrapper, threading.Thread]]:
        """The wrappers holding a connection now, with their threads."""
        return [(w, thread) for w, thread in self._wrappers.items() if w.connection is not None]

    def prune(self) -> None:
        """Close the connections of threads that have ended; forget closed wrappers.

        An ended thread's connection is never used again (under ASGI, Django runs each
        request's sync code in a thread of its own). A closed wrapper that connects
        again is added again.
        """
        ended: list[tuple[BaseDatabaseWrapper, threading.Thread]] = []
        for wrapper, thread in list(self._wrappers.items()):
            if wrapper.connection is None or not thread.is_alive():
                del self._wrappers[wrapper]
                if wrapper.connection is not None:
                    ended.append((wrapper, thread))
        close_everywhere(self.alias, ended, stray=False)

    def take(self, thread: threading.Thread) -> BaseDatabaseWrapper | None:
        """Forget and return ``thread``'s wrapper, if it holds a connection."""
        for wrapper, owner in self._wrappers.items():
            if owner is thread:
                del self._wrappers[wrapper]
                return wrapper if wrapper.connection is not None else None
        return None

    def close(self, *, stray: bool) -> int:
        """Close every connection, in every thread (see :func:`close_everywhere`); count them."""
        opened = self.connections()
        close_everywhere(self.alias, opened, stray=stray)
        self._wrappers.clear()
        return len(opened)


def close_pool(config: DatabaseConfiguration) -> None:
    """Close the connection pool of ``config``'s alias, if it has one."""
    if not config.settings["OPTIONS"].get("pool"):
        return
    wrapper = connections[config.alias]
    close_pool: Callable[[], None] | None = getattr(wrapper, "close_pool", None)
    try:
        if close_pool is not None:
            close_pool()
    finally:
        del connections[config.alias]


async def in_orm_thread(
    function: Callable[[DatabaseConfiguration], _T],
    config: DatabaseConfiguration,
    *,
    undo: Callable[[DatabaseConfiguration], None] | None = None,
) -> _T:
    """Run ``function(config)`` where the async ORM runs this task's queries; return its result.

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
    return call.result()


async def _wait_through_cancellation(call: Awaitable[object]) -> bool:
    """Wait for ``call`` to finish; return whether the waiting task was cancelled."""
    future = asyncio.ensure_future(call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:  # noqa: PERF203 - each cancellation is recorded, the wait goes on
            cancelled = True
    return cancelled
