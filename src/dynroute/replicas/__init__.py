"""Replicas: one primary and its read replicas, and where each read goes.

- ``_policy``: :class:`PrimaryReplica` and the :class:`Entry` of each block on it,
  whose ``read()`` is the read decision (and ``read_reason()`` its explanation);
- ``_pins``: reads sent to the primary after a write, and ``use_primary()``;
- ``_tracking``: what an active block records (the write hook calls it);
- ``_health``: replicas marked down when they fail to connect, per process.

The request middleware (``PrimaryReplicaMiddleware``) is in ``dynroute.http``: it enters
a block, which this room cannot import.
"""

from __future__ import annotations

from dynroute.replicas._health import down_replicas, mark_up
from dynroute.replicas._pins import (
    UsePrimary,
    describe_pins,
    get_pins,
    has_written,
    use_primary,
    used_primary,
)
from dynroute.replicas._policy import Choose, Entry, PrimaryReplica, groups, pairs
from dynroute.replicas._tracking import (
    current_entry,
    entered,
    leave,
    note_statement,
    read_primaries,
)

__all__ = [
    "Choose",
    "Entry",
    "PrimaryReplica",
    "UsePrimary",
    "current_entry",
    "describe_pins",
    "down_replicas",
    "entered",
    "get_pins",
    "groups",
    "has_written",
    "leave",
    "mark_up",
    "note_statement",
    "pairs",
    "read_primaries",
    "use_primary",
    "used_primary",
]
