"""``async with`` on a runtime configuration: connect in the async ORM's thread, leave unhopped.

The async ORM runs a task's queries in a thread of its own (under ASGI, one per
request: DJANGO_NOTES §6), so an async entry connects there, through a thread hop.
Its exit needs no hop: what the entry recorded (the alias and that thread) lets the
registry count the exit and close that thread's connection from the event loop's
thread. Each ``async with`` and each request through ``DatabaseMiddleware`` saves a
hop (about 100 µs of CPU).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

from dynroute.runtime._connections import in_orm_thread
from dynroute.runtime._registry import enter, leave, leave_from

if TYPE_CHECKING:
    from dynroute.core import DatabaseConfiguration

__all__ = ["aenter", "aleave", "drop"]

#: This task's async entries on runtime configurations, innermost last: the alias,
#: and the thread the async ORM connected in.
_ORM_THREADS: ContextVar[tuple[tuple[str, threading.Thread], ...]] = ContextVar(
    "dynroute_orm_threads", default=()
)


async def aenter(config: DatabaseConfiguration) -> None:
    """:func:`~dynroute.runtime.enter`, in the thread the async ORM runs in for this task.

    Raises what ``enter`` raises; a cancellation during the hop leaves nothing entered.
    """
    owner = await in_orm_thread(_enter_here, config, undo=leave)
    _ORM_THREADS.set((*_ORM_THREADS.get(), (config.alias, owner)))


def _enter_here(config: DatabaseConfiguration) -> threading.Thread:
    enter(config)
    return threading.current_thread()


async def aleave(config: DatabaseConfiguration) -> None:
    """Undo this task's innermost :func:`aenter`, which is of ``config``.

    Without a thread hop, unless that entry is not this task's innermost (a block
    entered inside it was never left, and was dropped) or the configuration's
    connections are pooled (only Django's ``close()``, in their thread, returns one
    to its pool): then in the async ORM's thread, as the entry was made.
    """
    owner = _take_innermost(config)
    if owner is None or config.settings["OPTIONS"].get("pool"):
        await in_orm_thread(leave, config)
    else:
        leave_from(config, owner)


def drop(config: DatabaseConfiguration) -> None:
    """Undo an entry of ``config`` that an enclosing block's exit dropped, in any thread.

    An ``async with`` entry (this task's innermost record, if it is of ``config``) is
    counted against the thread it connected in, and its connection closed; any other,
    as :func:`~dynroute.runtime.leave` in the calling thread.
    """
    owner = _take_innermost(config)
    if owner is None:
        leave(config)
    else:
        leave_from(config, owner)


def _take_innermost(config: DatabaseConfiguration) -> threading.Thread | None:
    """Forget this task's innermost record if it is of ``config``; return its thread."""
    entries = _ORM_THREADS.get()
    if not entries or entries[-1][0] != config.alias:
        return None
    _ORM_THREADS.set(entries[:-1])
    return entries[-1][1]
