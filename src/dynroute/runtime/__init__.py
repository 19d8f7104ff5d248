"""Runtime configurations: databases that are not in settings, for as long as blocks use them.

- ``_registry``: registering a configuration's alias on a block's entry, counting its
  blocks, keeping or closing it on their exit, and the bound on idle connections;
- ``_published``: ``connections.settings`` while runtime aliases are registered;
- ``_async``: ``async with`` entries: connecting in the async ORM's thread, leaving
  without a thread hop;
- ``_connections``: connecting, closing in every thread, and errors without secrets.
"""

from __future__ import annotations

from dynroute.runtime._async import aenter, aleave, drop
from dynroute.runtime._connections import scrub
from dynroute.runtime._registry import (
    DEFAULT_MAX_IDLE_CONNECTIONS,
    active_aliases,
    add_listener,
    close_idle_connections,
    enter,
    leave,
    remove_listener,
)

__all__ = [
    "DEFAULT_MAX_IDLE_CONNECTIONS",
    "active_aliases",
    "add_listener",
    "aenter",
    "aleave",
    "close_idle_connections",
    "drop",
    "enter",
    "leave",
    "remove_listener",
    "scrub",
]
