"""One entry of a block on a ``PrimaryReplica``: the replica it reads, and why.

An :class:`Entry` is made when a block on a ``PrimaryReplica`` is entered
(:func:`make_entry`), held by the route stack's frame, and asked for every read
(:meth:`Entry.read`, the read decision, in the order the policy's module lists). What
needs a query (has its replica replayed the position the code needs? is a lag check
due?) is settled at its first read, once, in the thread that reads.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, final

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError

from dynroute import _switches, observe
from dynroute.replicas._health import (
    DOWN,
    THREAD_CONNECTIONS,
    Group,
    connection,
    connects,
    down_now,
    is_down,
    usable,
)
from dynroute.replicas._pins import EVERY, get_pins
from dynroute.replicas._positions import (
    LAGGING,
    NEEDS,
    PRIMARY_ONLY,
    Position,
    check_lag,
    claim_lag_checks,
    describe,
    known,
    lag_due,
    reached,
    replayed,
    supports,
)

if TYPE_CHECKING:
    from django.db.models import Model

    from dynroute.replicas._positions import Pin


__all__ = ["Entry", "make_entry", "replayed_here", "usable_replicas"]

logger = logging.getLogger("dynroute")


class Policy(Group, Protocol):
    """What an entry needs of its ``PrimaryReplica`` (the policy's module imports this one)."""

    @property
    def max_lag(self) -> float | None: ...
    @property
    def lag_check_seconds(self) -> float: ...
    @property
    def pin(self) -> Pin: ...
    @property
    def pin_after_write(self) -> bool: ...
    def choose(self) -> str | None: ...


def make_entry(policy: Policy, *, ask: bool) -> Entry:
    """Make an entry of ``policy``: its replica chosen, and the position the code needs.

    A replica the cache shows has replayed that position is preferred. ``ask``:
    whether the entry may ask a replica (a query) at its first read.
    """
    needs = NEEDS.get()
    needed = None if needs is None else needs.get(policy.primary)
    replica = policy.choose()
    if needed is not None and replica is not None and not reached(replayed_here(replica), needed):
        replica = next(
            (alias for alias in usable_replicas(policy) if reached(replayed_here(alias), needed)),
            replica,
        )
    return Entry(policy, replica, needed, ask=ask)


def usable_replicas(policy: Policy) -> tuple[str, ...]:
    """The replicas of ``policy`` neither marked down nor lagging."""
    if not DOWN and not LAGGING:
        return policy.replicas
    return tuple(alias for alias in policy.replicas if not down_now(alias) and alias not in LAGGING)


def replayed_here(alias: str | None) -> Position | None:
    """What replica ``alias`` had replayed when last asked on this thread's connection to it."""
    return None if alias is None else known(connection(alias))


@final
class Entry:
    """One entry of a block on a :class:`PrimaryReplica`: the policy and the replica chosen.

    Immutable: a task started inside the block shares it with its parent and siblings.
    """

    __slots__ = ("_ask", "_held", "_needs", "_policy", "_primary", "_replica", "_settled", "pin")

    def __init__(
        self,
        policy: Policy,
        replica: str | None,
        needs: Position | None = None,
        *,
        ask: bool = True,
    ) -> None:
        self._policy = policy
        self._primary = policy.primary
        self._needs = needs
        self._ask = ask
        #: Whether the reads of this entry stay on the primary: no replica has
        #: replayed the position they need (then it has no replica).
        self._held = needs is PRIMARY_ONLY or (needs is not None and replica is None)
        self._replica = None if self._held else replica
        # Nothing to ask at the first read: no position needed that the cache does
        # not show replayed, no lag check due.
        self._settled = (
            needs is None or self._held or reached(replayed_here(replica), needs)
        ) and (policy.max_lag is None or not lag_due(policy.replicas))
        self.pin = policy.pin_after_write

    def __repr__(self) -> str:
        return f"<{self._policy!r} entry reading {self._replica or self._primary!r}>"

    @property
    def primary(self) -> str:
        """The primary: where this entry's writes go."""
        return self._primary

    @property
    def replica(self) -> str | None:
        """The replica this entry reads (``None``: none up, or none has the position it needs)."""
        return self._replica

    @property
    def replicas(self) -> tuple[str, ...]:
        """The replicas of this entry's policy."""
        return self._policy.replicas

    @property
    def pin_mode(self) -> Pin:
        """How this entry's policy carries a write past the block (``pin``)."""
        return self._policy.pin

    @property
    def needs(self) -> Position | None:
        """The position this entry's reads need a replica to have replayed, if any."""
        return self._needs

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ARG002, ANN401 - a policy's signature is fixed by the Protocol
        """Return the replica of this entry, or the primary (see the module's docstring)."""
        return self.read(model)

    def db_for_write(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ARG002, ANN401 - a policy's signature is fixed by the Protocol
        """Return the primary (the write hook records the write, for pinning)."""
        return self._primary

    def read(self, model: type[Model]) -> str:  # noqa: ARG002 - the router's argument
        """As :meth:`db_for_read`, without the hints: what the router calls."""
        # Runs on every read: the ContextVar getter bound once; the cache read inline,
        # by subscript (a KeyError, once per thread and alias, looks the connection up).
        primary = self._primary
        pins = get_pins()
        if pins and (EVERY in pins or (self.pin and primary in pins)):
            return primary
        cached = THREAD_CONNECTIONS.__dict__  # this thread's: one lookup for both aliases
        try:
            if cached[primary].in_atomic_block:
                return primary
            replica = self._replica
            if (
                replica is not None
                and self._settled
                and not DOWN
                and cached[replica].connection is not None
            ):
                return replica
        except KeyError:
            pass
        return self._checked_read(primary)

    def _checked_read(self, primary: str) -> str:  # noqa: PLR0911 - a return per rule of read()
        """As :meth:`read`, for what it leaves: a first read, a check to make, a replica down."""
        if connection(primary).in_atomic_block:
            return primary
        if not self._settled and not self._settle():
            return primary  # an event loop's thread: the query that settles runs elsewhere
        replica = self._replica
        if self._held:
            return primary
        if replica is None or (DOWN and is_down(replica)):
            # Another replica would need its own check of the position: the primary.
            return primary if self._needs is not None else usable(self._policy, skip=replica)
        if connection(replica).connection is None:
            if self._needs is not None:
                return replica if connects(replica, self._policy) else primary
            return usable(self._policy, replica)
        return replica

    def _settle(self) -> bool:
        """Make the checks this entry's first read needs, once; return ``False`` if it cannot here.

        A lag check due (for every replica of the policy, one query each, by one
        thread of the process), then whether the replica chosen, or another, has
        replayed the position the entry needs (one query each, at most).
        """
        # No lock: tasks sharing the entry that settle it at once each ask, and each
        # answer is right; the fields are set before _settled says so.
        policy = self._policy
        try:
            if policy.max_lag is not None:
                _check_lag(policy, policy.max_lag)
                if self._replica in LAGGING:
                    self._replica = next(iter(usable_replicas(policy)), None)
            needs = self._needs
            if needs is not None and not self._held:
                replica = _caught_up(policy, self._replica, needs, ask=self._ask)
                if replica is None:
                    self._replica = None  # before _held: a read in between finds no replica
                    self._held = True
                    if _switches.listening:
                        observe.reads_pinned.send_robust(
                            sender=type(policy), primary=policy.primary, reason="position"
                        )
                else:
                    self._replica = replica
        except SynchronousOnlyOperation:
            return False
        self._settled = True
        return True

    def read_reason(self, alias: str) -> str:
        """Say which rule of :meth:`read` sends a read to ``alias`` here, now.

        For the routing panel, which explains a read that went to ``alias``: the same
        checks as :meth:`read`, in its order, without its side effects (it connects
        nothing, claims no retry). A test holds the two together.
        """
        return _reason(self, alias, self._held)


def _check_lag(policy: Policy, max_lag: float) -> None:
    """Ask the lag of ``policy``'s replicas whose check is due (one query each)."""
    for alias in claim_lag_checks(policy.replicas, policy.lag_check_seconds):
        if is_down(alias) or not connects(alias, policy):
            continue
        try:
            check_lag(connection(alias), max_lag, type(policy))
        except DatabaseError as error:
            # Its reads will fail or succeed as they may; the next check asks again.
            logger.warning(
                "dynroute: could not read the lag of replica %r (%s): it is judged by its "
                "last answer; MariaDB needs the SLAVE MONITOR privilege",
                alias,
                type(error).__name__,
            )


def _caught_up(policy: Policy, chosen: str | None, needs: Position, *, ask: bool) -> str | None:
    """``chosen`` if it has replayed ``needs``, else another replica that has, else ``None``.

    Each is looked up in the cache, then (with ``ask``) asked, once.
    """
    candidates = (chosen, *(a for a in usable_replicas(policy) if a != chosen))
    for alias in candidates:
        if alias is None:
            continue
        if reached(replayed_here(alias), needs):
            return alias
        if not ask or is_down(alias) or not connects(alias, policy):
            continue
        wrapper = connection(alias)
        if not supports(wrapper):
            continue  # a backend without positions never has the one needed
        try:
            if reached(replayed(wrapper), needs):
                return alias
        except DatabaseError:
            continue
    return None


def _reason(entry: Entry, alias: str, held: bool) -> str:  # noqa: FBT001, PLR0911 - a reason per rule of read()
    """:meth:`Entry.read_reason`; ``held``: whether its reads stay on the primary."""
    needs = entry.needs
    if alias == entry.replica:
        if needs is None:
            return "the replica chosen on entry"
        return (
            f"the replica chosen on entry, which has replayed {describe(replayed_here(alias))}"
            f" (this read needs {describe(needs)})"
        )
    if alias != entry.primary:
        return "another replica (the one chosen is down)"
    pins = get_pins()
    if pins and EVERY in pins:
        return "the primary, inside use_primary()"
    if pins and entry.pin and alias in pins:
        return "the primary, pinned after a write"
    if connection(alias).in_atomic_block:
        return "the primary, inside a transaction"
    if held:
        return _held_reason(entry)
    if entry.replica is None:
        if LAGGING:
            return "the primary, every replica is down or lags past max_lag"
        return "the primary, every replica is down"
    return "the primary"


def _held_reason(entry: Entry) -> str:
    """Why reads held on the primary by the position they need go there."""
    needs = entry.needs
    if needs is PRIMARY_ONLY:
        return "the primary, pinned after a write (by time)"
    seen = ", ".join(
        f"{replica} at {describe(replayed_here(replica))}" for replica in entry.replicas
    )
    return (
        f"the primary, no replica has replayed the position this read needs "
        f"({describe(needs)}; {seen})"
    )
