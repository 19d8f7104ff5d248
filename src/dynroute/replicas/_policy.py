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
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, TypeAlias, TypeGuard, final

from django.db import connections

from dynroute.exceptions import UnknownDatabaseError, UsageError
from dynroute.replicas._entry import Entry, make_entry, replayed_here, usable_replicas
from dynroute.replicas._positions import Pin

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
            pin: How a write reaches the client's next requests (the middleware's
                cookie) and the Celery tasks enqueued after it: ``"position"``, the
                primary's position, read once, so those reads go to a replica once it
                has replayed it; ``"time"``, to the primary for ``pin_seconds``.
                SQLite, without positions, pins by time.
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
        return _shown(self, self._choose)

    # Asked directly (a Django router): a replica per query. Blocks ask their Entry.

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ANN401 - a policy's signature is fixed by the Protocol
        """Return the alias a read goes to, choosing a replica for this query alone.

        A position needed here is looked up in the cache of what replicas replayed,
        never asked (a query per read): not known there, the read goes to the primary.
        """
        return make_entry(self, ask=False).db_for_read(model, **hints)

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
        if not self._checked:
            _refuse_missing(self.primary, self.replicas)
            self._checked = True

    def enter(self) -> Entry:
        """Make the policy of one entry of a block: choose its replica (changes nothing)."""
        return make_entry(self, ask=True)

    def choose(self) -> str | None:
        """Return a replica neither marked down nor lagging, or ``None`` if none is."""
        up = usable_replicas(self)
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
            _refuse_choice(choose, chosen, up)
        return chosen


def _shown(policy: PrimaryReplica, choose: object) -> str:
    """The repr of ``policy``, whose ``choose`` argument was ``choose``."""
    name = (
        choose
        if isinstance(choose, str)
        else getattr(choose, "__qualname__", type(choose).__name__)
    )
    lag = (
        ""
        if policy.max_lag is None
        else f", max_lag={policy.max_lag:g}, lag_check_seconds={policy.lag_check_seconds:g}"
    )
    return (
        f"PrimaryReplica({policy.primary!r}, {policy.replicas!r}, choose={name!r}, "
        f"pin_after_write={policy.pin_after_write}, pin={policy.pin!r}, "
        f"down_seconds={policy.down_seconds:g}{lag})"
    )


def _refuse_missing(primary: str, replicas: tuple[str, ...]) -> None:
    """Raise if an alias of the policy is not in settings.

    Raises:
        UnknownDatabaseError: An alias is not in ``settings.DATABASES``.
    """
    configured = connections.settings
    missing = [alias for alias in (primary, *replicas) if alias not in configured]
    if missing:
        names = ", ".join(repr(name) for name in configured)
        msg = (
            f"PrimaryReplica: the database alias(es) {', '.join(map(repr, missing))} are "
            f"not in settings.DATABASES (configured: {names}). Add each replica to "
            'DATABASES, with "TEST": {"MIRROR": ' + f"{primary!r}" + "}."
        )
        raise UnknownDatabaseError(msg)


def _refuse_choice(choose: object, chosen: object, up: tuple[str, ...]) -> NoReturn:
    """Raise: a ``choose`` function returned something that is not one of ``up``.

    Raises:
        UsageError: Always.
    """
    msg = (
        f"PrimaryReplica(choose={choose!r}) returned {chosen!r}, which is not one of "
        f"the replicas it was given {up!r}: return one of them."
    )
    raise UsageError(msg)


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
