"""One primary and its read replicas: the ``PrimaryReplica`` policy and its per-entry ``Entry``.

A :class:`PrimaryReplica` block sends writes to the primary and reads to one replica,
chosen when the block is entered and kept until it exits (an :class:`Entry`, which
the route stack's frame holds). Reads go to the primary instead, in this order of
checks (:meth:`Entry.read`):

1. inside ``use_primary()`` (:mod:`dynroute.replicas._pins`);
2. after this thread or task has written to the primary in the block
   (``pin_after_write``; recorded by the write hook, :mod:`dynroute.replicas._tracking`);
3. while this thread's connection to the primary is in a transaction;
4. when every replica is marked down (:mod:`dynroute.replicas._health`).

What is per entry (the replica chosen) lives in the immutable :class:`Entry`; what is
per thread or task in ContextVars; what is per process (health, the groups
``allow_relation`` reads) in module dictionaries. Nothing per task is kept in a shared
mutable object.
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeGuard, final

from django.db import connections

from dynroute.exceptions import UnknownDatabaseError, UsageError
from dynroute.replicas._health import (
    DOWN,
    THREAD_CONNECTIONS,
    connection,
    down_now,
    is_down,
    usable,
)
from dynroute.replicas._pins import EVERY, get_pins

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from django.db.models import Model

__all__ = ["PRIMARIES", "Choose", "Entry", "PrimaryReplica", "groups", "pairs"]

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
        down_seconds: How long a replica that failed to connect is skipped.
    """

    __slots__ = (
        "_checked",
        "_choose",
        "_counter",
        "down_seconds",
        "pin_after_write",
        "primary",
        "replicas",
    )

    def __init__(
        self,
        primary: str = "default",
        replicas: Sequence[str] = (),
        *,
        choose: Choose = "round_robin",
        pin_after_write: bool = True,
        down_seconds: float = 30.0,
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
            down_seconds: How long a replica that failed to connect is skipped (per
                process).

        Raises:
            UsageError: An argument is of the wrong type or value.
        """
        names = _arguments(primary, replicas, choose, pin_after_write, down_seconds)
        self.primary = primary
        self.replicas: tuple[str, ...] = names
        self.pin_after_write = pin_after_write
        self.down_seconds = float(down_seconds)
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
        return (
            f"PrimaryReplica({self.primary!r}, {self.replicas!r}, choose={choose!r}, "
            f"pin_after_write={self.pin_after_write}, down_seconds={self.down_seconds:g})"
        )

    # The policy asked directly (as a Django router, or outside a block entry): a
    # replica is chosen per query. Blocks ask their entry instead (see Entry).

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ANN401 - a policy's signature is fixed by the Protocol
        """Return the alias a read goes to, choosing a replica for this query alone."""
        return Entry(self, self.choose()).db_for_read(model, **hints)

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
        return Entry(self, self.choose())

    def choose(self) -> str | None:
        """Return a replica that is not marked down, or ``None`` if all are."""
        up = self.replicas
        if DOWN:
            up = tuple(alias for alias in up if not down_now(alias))
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

    __slots__ = ("_policy", "_primary", "_replica", "pin")

    def __init__(self, policy: PrimaryReplica, replica: str | None) -> None:
        self._policy = policy
        self._primary = policy.primary
        self._replica = replica
        self.pin = policy.pin_after_write

    def __repr__(self) -> str:
        return f"<{self._policy!r} entry reading {self._replica or self._primary!r}>"

    @property
    def primary(self) -> str:
        """The primary: where this entry's writes go."""
        return self._primary

    @property
    def replica(self) -> str | None:
        """The replica chosen when the block was entered (``None``: all were down)."""
        return self._replica

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
            if replica is not None and not DOWN and cached[replica].connection is not None:
                return replica
        except KeyError:
            pass
        return self._checked_read(primary)

    def _checked_read(self, primary: str) -> str:
        """As :meth:`read`, for the cases it leaves: a first read in this thread, a replica down."""
        if connection(primary).in_atomic_block:
            return primary
        replica = self._replica
        if replica is None or (DOWN and is_down(replica)):
            return usable(self._policy, skip=replica)
        if connection(replica).connection is None:
            return usable(self._policy, replica)
        return replica

    def read_reason(self, alias: str) -> str:  # noqa: PLR0911 - a reason per rule of read()
        """Say which rule of :meth:`read` sends a read to ``alias`` here, now.

        For the routing panel, which explains a read that went to ``alias``: the same
        checks as :meth:`read`, in its order, without its side effects (it connects
        nothing, claims no retry). A test holds the two together.
        """
        if alias == self._replica:
            return "the replica chosen on entry"
        if alias != self._primary:
            return "another replica (the one chosen is down)"
        pins = get_pins()
        if pins and EVERY in pins:
            return "the primary, inside use_primary()"
        if pins and self.pin and alias in pins:
            return "the primary, pinned after a write"
        if connection(alias).in_atomic_block:
            return "the primary, inside a transaction"
        if self._replica is None:
            return "the primary, every replica is down"
        return "the primary"


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
