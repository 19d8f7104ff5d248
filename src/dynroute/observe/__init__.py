"""Observability: the signals dynroute sends, and the timing of blocks for them.

Their public face is :mod:`dynroute.signals`; the rooms that send them (runtime,
replicas, the request middleware, the blocks) import them from here.
"""

from __future__ import annotations

from dynroute.observe._signals import (
    CloseReason,
    DynrouteSignal,
    block_entered,
    block_exited,
    configuration_closed,
    configuration_registered,
    database_finished,
    database_started,
    entered,
    exited,
    get_timing,
    reads_pinned,
    replica_caught_up,
    replica_lagging,
    replica_marked_down,
    replica_restored,
)

__all__ = [
    "CloseReason",
    "DynrouteSignal",
    "block_entered",
    "block_exited",
    "configuration_closed",
    "configuration_registered",
    "database_finished",
    "database_started",
    "entered",
    "exited",
    "get_timing",
    "reads_pinned",
    "replica_caught_up",
    "replica_lagging",
    "replica_marked_down",
    "replica_restored",
]
