"""Replicas: one primary and its read replicas, and where each read goes.

- ``_policy``: :class:`PrimaryReplica` and the :class:`Entry` of each block on it,
  whose ``read()`` is the read decision (and ``read_reason()`` its explanation);
- ``_pins``: reads sent to the primary after a write, and ``use_primary()``;
- ``_tracking``: what an active block records (the write hook calls it);
- ``_health``: replicas marked down when they fail to connect, per process;
- ``_positions``: what a primary wrote and a replica replayed (read-your-writes by
  position), and replica lag.

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
from dynroute.replicas._policy import (
    Choose,
    Entry,
    Pin,
    PrimaryReplica,
    groups,
    pairs,
    replayed_here,
)
from dynroute.replicas._positions import (
    Needing,
    Needs,
    Position,
    by_time,
    describe,
    lagging,
    pack,
    reached,
    unpack,
)
from dynroute.replicas._positions import forget as forget_positions
from dynroute.replicas._tracking import (
    current_entry,
    entered,
    leave,
    note_statement,
    positions_to_carry,
    read_primaries,
    written_positions,
)

__all__ = [
    "Choose",
    "Entry",
    "Needing",
    "Needs",
    "Pin",
    "Position",
    "PrimaryReplica",
    "UsePrimary",
    "by_time",
    "current_entry",
    "describe",
    "describe_pins",
    "down_replicas",
    "entered",
    "forget_positions",
    "get_pins",
    "groups",
    "has_written",
    "lagging",
    "leave",
    "mark_up",
    "note_statement",
    "pack",
    "pairs",
    "positions_to_carry",
    "reached",
    "read_primaries",
    "replayed_here",
    "unpack",
    "use_primary",
    "used_primary",
    "written_positions",
]
