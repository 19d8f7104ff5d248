"""One primary and its read replicas: the ``PrimaryReplica`` policy and its per-entry ``Entry``.

A :class:`PrimaryReplica` block sends writes to the primary and reads to one replica,
chosen when the block is entered and kept until it exits (an :class:`Entry`, which
the route stack's frame holds). Reads go to the primary instead, in this order of
checks (:meth:`Entry.read`):

1. inside ``use_primary()`` (:mod:`dynroute.replicas._pins`);
2. after this thread or task has written to the primary in the block
   (``pin_after_write``; recorded by the write hook, :mod:`dynroute.replicas._tracking`);
3. while this thread's connection to the primary is in a transaction;
4. when the code needs a position (a write made before, by the client of a request
   or the enqueuer of a task) that the entry's replica has not replayed
   (:mod:`dynroute.replicas._positions`);
5. when every replica is marked down (:mod:`dynroute.replicas._health`), or lags past
   ``max_lag``.

An entry settles what needs a query (has its replica replayed the position it needs?
is a lag check due?) at its first read, once, in the thread that reads; until then,
and afterwards, a read costs no query.

What is per entry (the replica chosen) lives in the immutable :class:`Entry`; what is
per thread or task in ContextVars; what is per process (health, the groups
``allow_relation`` reads) in module dictionaries. Nothing per task is kept in a shared
mutable object.
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeGuard, final

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError, connections

from dynroute import _switches, observe
from dynroute.exceptions import UnknownDatabaseError, UsageError
from dynroute.replicas._health import (
    DOWN,
    THREAD_CONNECTIONS,
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
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from django.db.models import Model

__all__ = [
    "PRIMARIES",
    "Choose",
    "Entry",
    "Pin",
    "PrimaryReplica",
    "groups",
    "pairs",
    "replayed_here",
]

#: How a block picks its replica: by name, or a function of the replicas that are up.
Choose: TypeAlias = "Literal['round_robin', 'random'] | Callable[[tuple[str, ...]], str]"

#: How reads are kept on the primary after a write: until a replica has replayed it
#: (``"position"``), or for a time (``"time"``: the middleware's ``pin_seconds``).
Pin: TypeAlias = "Literal['position', 'time']"

_ROUND_ROBIN: Final = "round_robin"
_RANDOM: Final = "random"

#: Every alias of a primary/replica group, by each of its aliases: objects read from
#: any of them may be related (``allow_relation``).
_GROUPS: dict[str, frozenset[str]] = {}

#: The (primary, replicas) of every PrimaryReplica made in this process, for the
#: system check of the replicas' TEST settings.
_PAIRS: set[tuple[str, tuple[str, ...]]] = set()

#: The primaries of every PrimaryReplica made in this process (the write hook pins
#: only to these).
PRIMARIES: set[str] = set()


def _register(primary: str, replicas: tuple[str, ...]) -> None:
    """Note a PrimaryReplica's aliases in the registries above."""
    group = frozenset((primary, *replicas))
    for alias in group:
        _GROUPS[alias] = _GROUPS.get(alias, frozenset()) | group
    _PAIRS.add((primary, replicas))
    PRIMARIES.add(primary)


def pairs() -> set[tuple[str, tuple[str, ...]]]:
    """Return the (primary, replicas) of every PrimaryReplica made in this process."""
    return _PAIRS


def groups() -> dict[str, frozenset[str]]:
    """Return every alias of a primary/replica group by each alias (for ``allow_relation``)."""
    return _GROUPS


@final
class PrimaryReplica:
    """A routing policy for a primary and its read replicas.

    Use it as ``in_database(policy=PrimaryReplica(...))``: writes go to the primary;
    reads go to one replica chosen when the block is entered and kept for the whole
    block, or to the primary after a write in the block (``pin_after_write``), inside
    a transaction on the primary, inside :func:`use_primary`, or when every replica
    is down. ::

        replicas = PrimaryReplica("default", ("replica1", "replica2"))

        with in_database(policy=replicas):
            orders = list(Order.objects.filter(paid=True))    # one replica
            Order.objects.create(...)                         # the primary
            Order.objects.count()                             # the primary (pinned)

    Attributes:
        primary: The alias writes go to.
        replicas: The aliases reads may go to, in order.
        pin_after_write: Whether reads go to the primary after a write.
        pin: How a write is carried past the block: ``"position"`` or ``"time"``.
        down_seconds: How long a replica that failed to connect is skipped.
        max_lag: How far behind (seconds) a replica may be and still be chosen
            (``None``: no limit).
        lag_check_seconds: How often each process asks each replica its lag.
    """

    __slots__ = (
        "_checked",
        "_choose",
        "_counter",
        "down_seconds",
        "lag_check_seconds",
        "max_lag",
        "pin",
        "pin_after_write",
        "primary",
        "replicas",
    )

    def __init__(  # noqa: PLR0913 - keyword-only options of a public constructor
        self,
        primary: str = "default",
        replicas: Sequence[str] = (),
        *,
        choose: Choose = "round_robin",
        pin_after_write: bool = True,
        pin: Pin = "position",
        down_seconds: float = 30.0,
        max_lag: float | None = None,
        lag_check_seconds: float = 5.0,
    ) -> None:
        """Route writes to ``primary`` and reads to one of ``replicas`` per block.

        Args:
            primary: The alias of the primary, in ``settings.DATABASES``.
            replicas: The aliases of its replicas (at least one), in
                ``settings.DATABASES``.
            choose: How each block entry picks its replica: ``"round_robin"``,
                ``"random"``, or a function given the replicas that are up (a tuple,
                never empty) and returning one of them.
            pin_after_write: After a write in the block, send the reads of the same
                thread or task to the primary until the block exits.
            pin: How a write is carried past the block, to the client's next
                requests (the middleware's cookie) and to the Celery tasks enqueued
                after it: ``"position"`` (the default), the primary's position,
                read once, so that those reads go to a replica as soon as it has
                replayed it; ``"time"``, reads go to the primary for the
                middleware's ``pin_seconds`` (and in those tasks). Backends without
                positions (SQLite) pin by time either way.
            down_seconds: How long a replica that failed to connect is skipped (per
                process).
            max_lag: A replica further behind than this many seconds is not chosen
                (``None``, the default: no limit). A replica that has replayed all it
                received is never behind, however idle the primary.
            lag_check_seconds: How often (seconds) each process asks each replica
                its lag, with one query, when ``max_lag`` is set.

        Raises:
            UsageError: An argument is of the wrong type or value.
        """
        names = _arguments(primary, replicas, choose, pin_after_write, down_seconds)
        _check_pin(pin, max_lag, lag_check_seconds)
        self.primary = primary
        self.replicas: tuple[str, ...] = names
        self.pin_after_write = pin_after_write
        self.pin: Pin = pin
        self.down_seconds = float(down_seconds)
        self.max_lag = None if max_lag is None else float(max_lag)
        self.lag_check_seconds = float(lag_check_seconds)
        self._choose = choose
        self._counter = itertools.count()
        self._checked = False
        _register(primary, names)

    def __repr__(self) -> str:
        """Show the aliases and the options (never a setting of a database)."""
        choose = (
            self._choose
            if isinstance(self._choose, str)
            else getattr(self._choose, "__qualname__", type(self._choose).__name__)
        )
        lag = (
            ""
            if self.max_lag is None
            else (f", max_lag={self.max_lag:g}, lag_check_seconds={self.lag_check_seconds:g}")
        )
        return (
            f"PrimaryReplica({self.primary!r}, {self.replicas!r}, choose={choose!r}, "
            f"pin_after_write={self.pin_after_write}, pin={self.pin!r}, "
            f"down_seconds={self.down_seconds:g}{lag})"
        )

    # The policy asked directly (as a Django router, or outside a block entry): a
    # replica is chosen per query. Blocks ask their entry instead (see Entry).

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ANN401 - a policy's signature is fixed by the Protocol
        """Return the alias a read goes to, choosing a replica for this query alone.

        A position needed here is looked up in the cache of what replicas replayed,
        never asked (that would be a query per read): not known there, the read goes
        to the primary.
        """
        return self._entry(ask=False).db_for_read(model, **hints)

    def db_for_write(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ARG002, ANN401 - a policy's signature is fixed by the Protocol
        """Return the primary."""
        return self.primary

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:  # noqa: ARG002, ANN401 - Django's router signature
        """Allow relations between objects of the primary and its replicas; else no opinion."""
        first = obj1._state.db  # noqa: SLF001 - Django's model API
        second = obj2._state.db  # noqa: SLF001 - Django's model API
        aliases = (*self.replicas, self.primary)
        return True if first in aliases and second in aliases else None

    def check_aliases(self) -> None:
        """Refuse aliases that are not in settings.

        Once they are found, later calls do nothing: Django does not remove a database
        from settings at run time.

        Raises:
            UnknownDatabaseError: An alias is not in ``settings.DATABASES``.
        """
        if self._checked:
            return
        configured = connections.settings
        missing = [alias for alias in (self.primary, *self.replicas) if alias not in configured]
        if missing:
            names = ", ".join(repr(name) for name in configured)
            msg = (
                f"PrimaryReplica: the database alias(es) {', '.join(map(repr, missing))} are "
                f"not in settings.DATABASES (configured: {names}). Add each replica to "
                'DATABASES, with "TEST": {"MIRROR": ' + f"{self.primary!r}" + "}."
            )
            raise UnknownDatabaseError(msg)
        self._checked = True

    def enter(self) -> Entry:
        """Make the policy of one entry of a block: choose its replica (changes nothing)."""
        return self._entry(ask=True)

    def _entry(self, *, ask: bool) -> Entry:
        needs = NEEDS.get()
        needed = None if needs is None else needs.get(self.primary)
        replica = self.choose()
        if (
            needed is not None
            and replica is not None
            and not reached(replayed_here(replica), needed)
        ):
            # Another replica known (cached) to have replayed it, if there is one.
            replica = next(
                (alias for alias in self._up() if reached(replayed_here(alias), needed)), replica
            )
        return Entry(self, replica, needed, ask=ask)

    def _up(self) -> tuple[str, ...]:
        """The replicas neither marked down nor lagging."""
        if not DOWN and not LAGGING:
            return self.replicas
        return tuple(
            alias for alias in self.replicas if not down_now(alias) and alias not in LAGGING
        )

    def choose(self) -> str | None:
        """Return a replica neither marked down nor lagging, or ``None`` if none is."""
        up = self._up()
        if not up:
            return None
        choose = self._choose
        if isinstance(choose, str):
            if choose == _RANDOM:
                return random.choice(up)  # noqa: S311 - spreading load, not secrecy
            # itertools.count is atomic under the GIL: threads never get the same turn.
            return up[next(self._counter) % len(up)]
        chosen: object = choose(up)
        if not _is_alias(chosen) or chosen not in up:
            msg = (
                f"PrimaryReplica(choose={choose!r}) returned {chosen!r}, which is not one of "
                f"the replicas it was given {up!r}: return one of them."
            )
            raise UsageError(msg)
        return chosen


@final
class Entry:
    """One entry of a block on a :class:`PrimaryReplica`: the policy and the replica chosen.

    Immutable: a task started inside the block shares it with its parent and siblings.
    """

    __slots__ = ("_ask", "_held", "_needs", "_policy", "_primary", "_replica", "_settled", "pin")

    def __init__(
        self,
        policy: PrimaryReplica,
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
                self._check_lag(policy, policy.max_lag)
            needs = self._needs
            if needs is not None and not self._held:
                replica = self._caught_up(policy, needs)
                if replica is None:
                    self._replica = None  # before _held: a read in between finds no replica
                    self._held = True
                    if _switches.listening:
                        observe.reads_pinned.send_robust(
                            sender=PrimaryReplica, primary=policy.primary, reason="position"
                        )
                else:
                    self._replica = replica
        except SynchronousOnlyOperation:
            return False
        self._settled = True
        return True

    def _check_lag(self, policy: PrimaryReplica, max_lag: float) -> None:
        """Ask the lag of the replicas whose check is due; move off this entry's if it lags."""
        for alias in claim_lag_checks(policy.replicas, policy.lag_check_seconds):
            if is_down(alias) or not connects(alias, policy):
                continue
            try:
                check_lag(connection(alias), max_lag, PrimaryReplica)
            except DatabaseError:
                continue  # a failing query: its reads will say so
        if self._replica in LAGGING:
            self._replica = next(iter(policy._up()), None)  # noqa: SLF001 - its own policy's

    def _caught_up(self, policy: PrimaryReplica, needs: Position) -> str | None:
        """The replica chosen if it has replayed ``needs``, else another that has, else ``None``."""
        chosen = self._replica
        candidates = (chosen, *(a for a in policy._up() if a != chosen))  # noqa: SLF001 - its own policy's
        for alias in candidates:
            if alias is None:
                continue
            if reached(replayed_here(alias), needs):
                return alias
            if not self._ask or is_down(alias) or not connects(alias, policy):
                continue
            try:
                if reached(replayed(connection(alias)), needs):
                    return alias
            except DatabaseError:
                continue
        return None

    def read_reason(self, alias: str) -> str:  # noqa: PLR0911 - a reason per rule of read()
        """Say which rule of :meth:`read` sends a read to ``alias`` here, now.

        For the routing panel, which explains a read that went to ``alias``: the same
        checks as :meth:`read`, in its order, without its side effects (it connects
        nothing, claims no retry). A test holds the two together.
        """
        needs = self._needs
        if alias == self.replica:
            if needs is None:
                return "the replica chosen on entry"
            return (
                f"the replica chosen on entry, which has replayed {describe(replayed_here(alias))}"
                f" (this read needs {describe(needs)})"
            )
        if alias != self._primary:
            return "another replica (the one chosen is down)"
        pins = get_pins()
        if pins and EVERY in pins:
            return "the primary, inside use_primary()"
        if pins and self.pin and alias in pins:
            return "the primary, pinned after a write"
        if connection(alias).in_atomic_block:
            return "the primary, inside a transaction"
        if self._held:
            return self._held_reason()
        if self._replica is None:
            if LAGGING:
                return "the primary, every replica is down or lags past max_lag"
            return "the primary, every replica is down"
        return "the primary"

    def _held_reason(self) -> str:
        """Why reads held on the primary by the position they need go there."""
        needs = self._needs
        if needs is PRIMARY_ONLY:
            return "the primary, pinned after a write (by time)"
        seen = ", ".join(
            f"{replica} at {describe(replayed_here(replica))}" for replica in self._policy.replicas
        )
        return (
            f"the primary, no replica has replayed the position this read needs "
            f"({describe(needs)}; {seen})"
        )


def replayed_here(alias: str | None) -> Position | None:
    """What replica ``alias`` had replayed when last asked on this thread's connection to it."""
    return None if alias is None else known(connection(alias))


def _check_pin(pin: object, max_lag: object, lag_check_seconds: object) -> None:
    """Check PrimaryReplica's ``pin``, ``max_lag`` and ``lag_check_seconds``.

    Raises:
        UsageError: One is of the wrong type or value.
    """
    if pin not in ("position", "time"):
        msg = f"PrimaryReplica(pin=...) must be 'position' or 'time', got {pin!r}."
        raise UsageError(msg)
    if max_lag is not None and not (_is_number(max_lag) and max_lag > 0):
        msg = f"PrimaryReplica(max_lag=...) must be seconds > 0 or None, got {max_lag!r}."
        raise UsageError(msg)
    if not (_is_number(lag_check_seconds) and lag_check_seconds > 0):
        msg = (
            f"PrimaryReplica(lag_check_seconds=...) must be a number of seconds > 0, "
            f"got {lag_check_seconds!r}."
        )
        raise UsageError(msg)


def _is_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is an ``int`` or ``float`` (not a ``bool``)."""
    return type(value) in (int, float)


def _is_alias(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be a database alias: a non-empty ``str``."""
    return isinstance(value, str) and bool(value)


def _arguments(
    primary: str,
    replicas: Sequence[str],
    choose: Choose,
    pin_after_write: bool,  # noqa: FBT001 - PrimaryReplica's arguments, checked
    down_seconds: float,
) -> tuple[str, ...]:
    """Check PrimaryReplica's arguments; return its replicas as a tuple.

    Raises:
        UsageError: An argument is of the wrong type or value.
    """
    if isinstance(replicas, str):
        msg = (
            f"PrimaryReplica(replicas=...) takes a sequence of aliases, not the string "
            f"{replicas!r}: write replicas=({replicas!r},)."
        )
        raise UsageError(msg)
    try:
        names = tuple(replicas)
    except TypeError:
        msg = f"PrimaryReplica(replicas=...) takes a sequence of aliases, got {replicas!r}."
        raise UsageError(msg) from None
    if not _is_alias(primary):
        msg = f"PrimaryReplica(primary=...) must be a database alias (str), got {primary!r}."
        raise UsageError(msg)
    if not names or not all(_is_alias(name) for name in names):
        msg = (
            f"PrimaryReplica(replicas=...) must list at least one database alias (str), "
            f"got {names!r}."
        )
        raise UsageError(msg)
    if primary in names or len(set(names)) != len(names):
        msg = (
            f"PrimaryReplica(replicas={names!r}) lists an alias twice, or the primary "
            f"{primary!r}: list each replica once, without the primary."
        )
        raise UsageError(msg)
    chooser: object = choose
    if chooser not in (_ROUND_ROBIN, _RANDOM) and not callable(chooser):
        msg = (
            f"PrimaryReplica(choose=...) must be 'round_robin', 'random' or a function "
            f"of the replicas returning one of them, got {choose!r}."
        )
        raise UsageError(msg)
    flag: object = pin_after_write
    if type(flag) is not bool:
        msg = f"PrimaryReplica(pin_after_write=...) must be True or False, got {pin_after_write!r}."
        raise UsageError(msg)
    seconds: object = down_seconds
    if type(seconds) not in (int, float) or not down_seconds >= 0:
        msg = (
            f"PrimaryReplica(down_seconds=...) must be a number of seconds >= 0, "
            f"got {down_seconds!r}."
        )
        raise UsageError(msg)
    return names
