"""Django signals dynroute sends: connect receivers to log, measure or trace routing.

::

    from django.dispatch import receiver
    from dynroute.signals import block_exited

    @receiver(block_exited)
    def time_blocks(sender, route, duration, **kwargs):
        metrics.timing("db.block", duration, tags={"alias": route.alias})

Each signal's arguments are listed below. Receivers are plain functions, called
synchronously where the event happens (in sync and async code alike) with
``send_robust``: a receiver that raises is logged by Django and changes nothing for the
block. No argument holds a password: configurations are described by alias, engine,
name and host, and every ``repr`` dynroute makes leaves secrets out. With no receiver
connected, blocks send nothing and their entry and exit cost what they did (an
``async with`` exit reads one ContextVar more).
"""

from __future__ import annotations

from dynroute.observe import (
    DynrouteSignal,
    block_entered,
    block_exited,
    configuration_closed,
    configuration_registered,
    database_finished,
    database_started,
    reads_pinned,
    replica_caught_up,
    replica_lagging,
    replica_marked_down,
    replica_restored,
)

__all__ = [
    "DynrouteSignal",
    "block_entered",
    "block_exited",
    "configuration_closed",
    "configuration_registered",
    "database_finished",
    "database_started",
    "reads_pinned",
    "replica_caught_up",
    "replica_lagging",
    "replica_marked_down",
    "replica_restored",
]
