"""What a block does on entry and exit besides moving the route: its checks and features.

A block on an alias, once its checks have passed, skips all of this (see
:class:`~dynroute.routing._block.InDatabase`). Every other block comes here on each
entry and exit, and this is the one place that knows which room does what:

- the router must be installed, and an alias configured (this room);
- a route lock in force must allow the block's database (``dynroute.tenants``);
- a runtime configuration is registered and connected (``dynroute.runtime``);
- a ``PrimaryReplica`` chooses the replica of the entry, and its writes are recorded
  for pins (``dynroute.replicas``), through the write hook (``dynroute.writes``);
- a block made with ``prevent_writes=True`` enters a prevention scope (``dynroute.writes``);
- a receiver of dynroute's signals hears of the entry and exit (``dynroute.observe``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn, final

from django.db import connections

from dynroute import _switches, observe, replicas, runtime, tenants, writes
from dynroute.exceptions import UnknownDatabaseError
from dynroute.routing._router import require_router

if TYPE_CHECKING:
    from dynroute.core import DatabaseConfiguration, RoutingPolicy
    from dynroute.replicas import PrimaryReplica

__all__ = ["Features", "warn_dropped"]

logger = logging.getLogger("dynroute")


@final
class Features:
    """What entering and leaving one block takes besides the route; fixed when it is built.

    Attributes:
        alias: The block's alias (``route.alias``), for the route lock.
        configuration: The runtime configuration the block registers, if any.
        primary_replica: The ``PrimaryReplica`` whose replica each entry chooses, if any.
        prevent: Whether the block refuses writes.
        plain: Whether none of these is used: then, once the checks have passed, the
            block may skip them until a switch is thrown (see ``dynroute._switches``).
    """

    __slots__ = ("alias", "configuration", "plain", "prevent", "primary_replica")

    def __init__(
        self,
        alias: str | None,
        configuration: DatabaseConfiguration | None,
        primary_replica: PrimaryReplica | None,
        *,
        prevent: bool,
    ) -> None:
        """Hold what a block uses; :class:`~dynroute.routing._block.InDatabase` builds it."""
        self.alias = alias
        self.configuration = configuration
        self.primary_replica = primary_replica
        self.prevent = prevent
        self.plain = configuration is None and primary_replica is None and not prevent

    def policy(self, ask: RoutingPolicy | None) -> RoutingPolicy | None:
        """The policy the frame of this entry asks: a PrimaryReplica's entry, with its replica.

        Made before anything else of the entry: a ``choose`` function may raise.
        """
        if self.primary_replica is not None:
            return self.primary_replica.enter()
        return ask

    def enter(self, block: object) -> None:
        """Check and set up one entry of ``block``, before its frame is pushed.

        Raises:
            ConfigurationError: dynroute's router is not installed, or a runtime
                configuration cannot be registered.
            UnknownDatabaseError: The alias is not in ``settings.DATABASES``.
            RouteLockedError: A route lock here is to another database.
            DatabaseConnectionError: A runtime configuration's database cannot be
                reached; nothing is left registered.
        """
        self._check(block)
        if self.configuration is not None:
            runtime.enter(self.configuration)
        elif self.primary_replica is not None:
            self.primary_replica.check_aliases()
            writes.install_everywhere()  # the write hook pins on writes that skip the router
        elif self.alias is not None and self.alias not in connections.settings:
            _unknown_alias(self.alias)
        if self.prevent:
            writes.enter_scope(block, enabled=True)

    async def aenter(self, block: object) -> None:
        """As :meth:`enter`, for a runtime configuration: it connects in the async ORM's thread."""
        self._check(block)
        if self.configuration is not None:
            await runtime.aenter(self.configuration)
        if self.prevent:
            writes.enter_scope(block, enabled=True)

    def _check(self, block: object) -> None:
        require_router()
        if _switches.locks_used:
            tenants.check(self.alias, block)

    def entered(self, block: object) -> bool:
        """After ``block``'s frame is pushed: start recording pins, report the entry.

        Returns:
            Whether the entry was reported (its exit then reports too).
        """
        if self.primary_replica is not None:
            replicas.entered()
        if _switches.listening:
            observe.entered(block)
            return True
        return False

    def leave(self, block: object) -> None:
        """After ``block``'s frame is gone: report, end pins and scope, free the configuration."""
        if observe.get_timing() is not None:
            observe.exited(block)
        try:
            self._end(block)
        finally:
            if self.configuration is not None:
                runtime.leave(self.configuration)

    async def aleave(self, block: object) -> None:
        """As :meth:`leave`, closing in the async ORM's thread what :meth:`aenter` opened there."""
        if observe.get_timing() is not None:
            observe.exited(block)
        try:
            self._end(block)
        finally:
            if self.configuration is not None:
                await runtime.aleave(self.configuration)

    def _end(self, block: object, *, dropped: bool = False) -> None:
        if self.primary_replica is not None:
            replicas.leave()
        if self.prevent:
            # A dropped block's scope may be gone already, dropped by an enclosing
            # scope's exit.
            writes.leave_scope(block, missing_ok=dropped)

    def drop(self, block: object) -> None:
        """Undo an entry of ``block`` that an enclosing block's exit dropped."""
        self._end(block, dropped=True)
        if self.configuration is not None:
            runtime.drop(self.configuration)


def warn_dropped(block: object, count: int) -> None:
    """Say that ``block`` was left while ``count`` blocks entered inside it were active.

    They are dropped with it (see core's ``pop()``): a generator suspended inside a
    block and abandoned, or a block entered by hand and never left. Their route was in
    force outside the code that entered them; the log says so, once per occurrence.
    """
    logger.warning(
        "%r was left while %d block(s) entered inside it were still active (a generator "
        "suspended inside a block, or a block never left): they were dropped with it",
        block,
        count,
    )


def _unknown_alias(alias: str) -> NoReturn:
    """Raise the error for an alias that is not in settings."""
    configured = ", ".join(repr(name) for name in connections.settings)
    msg = (
        f"The database alias {alias!r} is not in settings.DATABASES (configured: "
        f"{configured}). Add it to DATABASES, or pass in_database() a settings dict "
        "to use a database that is not configured."
    )
    raise UnknownDatabaseError(msg)
