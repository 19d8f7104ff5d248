"""One primary and its read replicas: ``PrimaryReplica``, ``use_primary()`` and replica health.

A :class:`PrimaryReplica` block sends writes to the primary and reads to one replica,
chosen when the block is entered and kept until it exits. Reads go to the primary
instead, in this order of checks:

1. inside :func:`use_primary` (a ContextVar depth, so it follows tasks and nests);
2. after this thread or task has written in the block (``pin_after_write``): the
   write hook of :mod:`dynroute._writes`, which sees every statement (routed or not),
   records the primary in a ContextVar, which a child task inherits but never hands
   back to its siblings, and which ``sync_to_async`` hands back to its caller
   (DJANGO_NOTES §13);
3. while this thread's connection to the primary is in a transaction;
4. when every replica is marked down.

The first two share one ContextVar (:data:`_PINS`): a read asks it once.

Health is per process: a replica whose connection fails to open is skipped for
``down_seconds``; after that, one read (not every one at once) tries it again.

What is per entry (the replica chosen) lives in an immutable :class:`Entry`, which
the route stack's frame holds; what is per thread or task lives in ContextVars; what
is per process (health, the groups ``allow_relation`` reads) in module dictionaries.
Nothing per task is kept in a shared mutable object.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    ParamSpec,
    TypeAlias,
    TypeGuard,
    TypeVar,
    final,
    overload,
)

from django.core.exceptions import SynchronousOnlyOperation
from django.db import OperationalError, connections

from dynroute import _signals
from dynroute._decorating import SyncScope
from dynroute._sql import may_write, statement_text
from dynroute._state import get_frame
from dynroute.exceptions import RouteStateError, UnknownDatabaseError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from types import TracebackType

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models import Model

__all__ = [
    "Entry",
    "PrimaryReplica",
    "UsePrimary",
    "current_entry",
    "entered",
    "get_written",
    "groups",
    "has_written",
    "leave",
    "note_statement",
    "pairs",
    "read_primaries",
    "use_primary",
    "used_primary",
]

logger = logging.getLogger("dynroute")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

#: How a block picks its replica: by name, or a function of the replicas that are up.
Choose: TypeAlias = "Literal['round_robin', 'random'] | Callable[[tuple[str, ...]], str]"

#: Where reads of this thread or task go to the primary, inside the outermost active
#: PrimaryReplica block: the primaries it has written to there, and :data:`_ALL`
#: while a ``use_primary()`` scope is active; ``None`` outside every such block.
_PINS: ContextVar[frozenset[str] | None] = ContextVar("dynroute_pins", default=None)
_get_pins = _PINS.get

#: In :data:`_PINS`: every primary (``use_primary()``). Never an alias: PrimaryReplica
#: refuses an empty one.
_ALL: Final = ""
_EVERY_PRIMARY: Final = frozenset((_ALL,))

#: How many ``use_primary()`` scopes are active here.
_FORCED: ContextVar[int] = ContextVar("dynroute_use_primary", default=0)

#: Whether ``use_primary()`` was entered here inside the outermost active
#: PrimaryReplica block (the middleware streams such a response from the primary).
_USED_PRIMARY: ContextVar[bool] = ContextVar("dynroute_used_primary", default=False)

#: Replicas marked down in this process: alias -> (``time.monotonic()`` until which
#: it is skipped, for how long it is skipped each time). Read without the lock (a
#: dict lookup is atomic); changed with it.
_DOWN: dict[str, tuple[float, float]] = {}
_DOWN_LOCK = threading.Lock()

#: Every alias of a primary/replica group, by each of its aliases: objects read from
#: any of them may be related (``allow_relation``).
_GROUPS: dict[str, frozenset[str]] = {}

#: This thread's Django connection objects by alias. ``connections[alias]`` costs
#: 1.6 µs (asgiref's Local), more than the rest of a read decision; the object Django
#: gives a thread for an alias does not change while it is connected, and a cached
#: one that is not connected is looked up again before it is used to connect.
_THREAD = threading.local()

_ROUND_ROBIN: Final = "round_robin"
_RANDOM: Final = "random"


def _fresh_connection(alias: str) -> BaseDatabaseWrapper:
    """Look up this thread's connection object for ``alias`` and cache it."""
    wrapper = connections[alias]
    setattr(_THREAD, alias, wrapper)
    return wrapper


def _connection(alias: str) -> BaseDatabaseWrapper:
    """This thread's connection object for ``alias``, from the cache or looked up."""
    cached: BaseDatabaseWrapper | None = _THREAD.__dict__.get(alias)
    return cached if cached is not None else _fresh_connection(alias)


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
            msg = (
                "PrimaryReplica(pin_after_write=...) must be True or False, "
                f"got {pin_after_write!r}."
            )
            raise UsageError(msg)
        seconds: object = down_seconds
        if type(seconds) not in (int, float) or not down_seconds >= 0:
            msg = (
                f"PrimaryReplica(down_seconds=...) must be a number of seconds >= 0, "
                f"got {down_seconds!r}."
            )
            raise UsageError(msg)
        self.primary = primary
        self.replicas: tuple[str, ...] = names
        self.pin_after_write = pin_after_write
        self.down_seconds = float(down_seconds)
        self._choose = choose
        self._counter = itertools.count()
        self._checked = False
        group = frozenset((primary, *names))
        for alias in group:
            _GROUPS[alias] = _GROUPS.get(alias, frozenset()) | group
        _PAIRS.add((primary, names))
        _PRIMARIES.add(primary)

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
        if _DOWN:
            up = tuple(alias for alias in up if not _down_now(alias))
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

    def usable(self, first: str | None = None, *, skip: str | None = None) -> str:
        """Return a replica whose connection opens here, else the primary.

        ``first`` (already found up by the caller) is tried first, then the other
        replicas that are not down, except ``skip``. A replica whose connection fails
        with ``OperationalError`` is marked down for ``down_seconds``, with a WARNING.
        """
        if first is not None and _connects(first, self.down_seconds):
            return first
        for candidate in self.replicas:
            if candidate in (first, skip) or _is_down(candidate):
                continue
            if _connects(candidate, self.down_seconds):
                return candidate
        return self.primary


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
        pins = _get_pins()
        if pins and (_ALL in pins or (self.pin and primary in pins)):
            return primary
        cached = _THREAD.__dict__  # this thread's: one lookup for both aliases
        try:
            if cached[primary].in_atomic_block:
                return primary
            replica = self._replica
            if replica is not None and not _DOWN and cached[replica].connection is not None:
                return replica
        except KeyError:
            pass
        return self._checked_read(primary)

    def _checked_read(self, primary: str) -> str:
        """As :meth:`read`, for the cases it leaves: a first read in this thread, a replica down."""
        if _connection(primary).in_atomic_block:
            return primary
        replica = self._replica
        if replica is None or (_DOWN and _is_down(replica)):
            return self._policy.usable(skip=replica)
        if _connection(replica).connection is None:
            return self._policy.usable(replica)
        return replica


#: The pins of this thread or task (see :data:`_PINS`): ``None`` outside every
#: PrimaryReplica block (the write hook's test).
get_written = _PINS.get

#: The primaries of every PrimaryReplica made in this process.
_PRIMARIES: set[str] = set()


def note_statement(sql: object, connection: BaseDatabaseWrapper, written: frozenset[str]) -> None:
    """Pin to ``connection``'s alias if it is a primary and ``sql`` may write.

    Called by the write hook for each statement inside a PrimaryReplica block: writes
    that never ask the router (``.using()``, raw SQL) pin too.
    """
    alias = connection.alias
    if alias in written or alias not in _PRIMARIES:
        return
    text = statement_text(sql, connection)
    if text is None or may_write(text, connection.vendor):
        _PINS.set(written | {alias})
        if _signals.listening:
            _report_pin(alias)


def _report_pin(primary: str) -> None:
    """Send ``reads_pinned`` if an active block pins its reads to ``primary`` after a write."""
    frame = get_frame()
    while frame is not None:
        ask = frame[3]
        if type(ask) is Entry and ask.pin and ask.primary == primary:
            _signals.reads_pinned.send_robust(
                sender=PrimaryReplica, primary=primary, reason="write"
            )
            return
        frame = frame[4]


def read_primaries() -> bool:
    """Send the reads here to the primary until the innermost PrimaryReplica block exits.

    For the middleware's requests that read the primary: one ContextVar set, where a
    ``use_primary()`` scope costs five. Only where that block is the outermost (its
    exit then ends it); otherwise it does nothing and returns ``False``: enter
    ``use_primary()`` instead.
    """
    pins = _PINS.get()
    frame = get_frame()
    entries = 0
    while frame is not None:
        entries += type(frame[3]) is Entry
        frame = frame[4]
    if pins is None or entries != 1:
        return False
    _PINS.set(pins | _EVERY_PRIMARY)
    return True


def has_written(primary: str) -> bool:
    """Return whether this thread or task wrote to ``primary`` in the active blocks."""
    pins = _PINS.get()
    return pins is not None and primary in pins


def entered() -> None:
    """After a PrimaryReplica block's frame is pushed: record its writes from now on."""
    if _PINS.get() is None:
        _PINS.set(_EVERY_PRIMARY if _FORCED.get() else frozenset())


def current_entry() -> Entry | None:
    """Return the entry of the innermost active PrimaryReplica block here, if any."""
    frame = get_frame()
    while frame is not None:
        ask = frame[3]
        if type(ask) is Entry:
            return ask
        frame = frame[4]
    return None


def leave() -> None:
    """After a PrimaryReplica block's frame is gone: forget the writes if it was the outermost."""
    if current_entry() is None:
        _PINS.set(None)
        if _USED_PRIMARY.get():
            _USED_PRIMARY.set(False)


def used_primary() -> bool:
    """Return whether ``use_primary()`` was entered in the active PrimaryReplica blocks here."""
    return _USED_PRIMARY.get()


#: The (primary, replicas) of every PrimaryReplica made in this process, for the
#: system check of the replicas' TEST settings.
_PAIRS: set[tuple[str, tuple[str, ...]]] = set()


def pairs() -> set[tuple[str, tuple[str, ...]]]:
    """Return the (primary, replicas) of every PrimaryReplica made in this process."""
    return _PAIRS


def groups() -> dict[str, frozenset[str]]:
    """Return every alias of a primary/replica group by each alias (for ``allow_relation``)."""
    return _GROUPS


def _is_alias(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be a database alias: a non-empty ``str``."""
    return isinstance(value, str) and bool(value)


def _is_down(alias: str) -> bool:
    """Return whether ``alias`` is to be skipped now, claiming its retry once it is due.

    Once its time is over, the first caller claims the retry: it sees the replica as
    up and tries it; the others keep skipping it for another ``down_seconds``.
    """
    mark = _DOWN.get(alias)
    if mark is None:
        return False
    until, seconds = mark
    now = time.monotonic()
    if now < until:
        return True
    with _DOWN_LOCK:
        if _DOWN.get(alias) is not mark:
            return True  # another caller claimed the retry
        _DOWN[alias] = (now + seconds, seconds)
    return False


def _down_now(alias: str) -> bool:
    """Return whether ``alias`` is marked down and not yet due for a retry (claims nothing)."""
    mark = _DOWN.get(alias)
    return mark is not None and time.monotonic() < mark[0]


def _connects(alias: str, down_seconds: float) -> bool:
    """Open this thread's connection to ``alias``; mark it down if that fails."""
    connection = _fresh_connection(alias)
    try:
        connection.ensure_connection()
    except SynchronousOnlyOperation:
        return True  # an event loop's thread: the query itself runs elsewhere
    except OperationalError as error:
        _mark_down(alias, down_seconds, error)
        return False
    if alias in _DOWN:
        with _DOWN_LOCK:
            _DOWN.pop(alias, None)
        logger.warning("dynroute: replica %r is back up: reads go to it again", alias)
        if _signals.listening:
            _signals.replica_restored.send_robust(sender=PrimaryReplica, alias=alias)
    return True


def _mark_down(alias: str, down_seconds: float, error: OperationalError) -> None:
    with _DOWN_LOCK:
        first = alias not in _DOWN
        _DOWN[alias] = (time.monotonic() + down_seconds, down_seconds)
    logger.warning(
        "dynroute: replica %r is down (%s on connect): %s for %g s",
        alias,
        type(error).__name__,
        "skipping it" if first else "still down, skipping it again",
        down_seconds,
    )
    if _signals.listening:
        _signals.replica_marked_down.send_robust(
            sender=PrimaryReplica, alias=alias, seconds=down_seconds, error=type(error).__name__
        )


def mark_up(alias: str | None = None) -> None:
    """Forget that ``alias`` (or every replica) is down; for tests and operators."""
    with _DOWN_LOCK:
        if alias is None:
            _DOWN.clear()
        else:
            _DOWN.pop(alias, None)


def down_replicas() -> dict[str, float]:
    """Return the replicas marked down, with the seconds until each is tried again."""
    now = time.monotonic()
    return {alias: max(0.0, until - now) for alias, (until, _) in _DOWN.items()}


@final
class UsePrimary(SyncScope):
    """A scope in which PrimaryReplica blocks read from the primary; made by :func:`use_primary`."""

    __slots__ = ()
    _decorates = ("use_primary()", "primary")

    def __repr__(self) -> str:
        """Show the call that made it."""
        return "use_primary()"

    def __enter__(self) -> None:
        """Send the reads of PrimaryReplica blocks here to their primary until the scope exits."""
        _FORCED.set(_FORCED.get() + 1)
        pins = _PINS.get()
        if pins is not None:
            _USED_PRIMARY.set(True)
            _PINS.set(pins | _EVERY_PRIMARY)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore what was in force before the scope.

        Raises:
            RouteStateError: No ``use_primary()`` scope is active here.
        """
        depth = _FORCED.get()
        if not depth:
            msg = (
                "use_primary() was left without being active here: a scope must be left in "
                "the thread or task that entered it, once per entry."
            )
            raise RouteStateError(msg)
        _FORCED.set(depth - 1)
        pins = _PINS.get()
        if depth == 1 and pins is not None:
            _PINS.set(pins - _EVERY_PRIMARY)


_USE_PRIMARY: Final = UsePrimary()


@overload
def use_primary() -> UsePrimary: ...


@overload
def use_primary(
    func: Callable[_P, Coroutine[Any, Any, _T]], /
) -> Callable[_P, Coroutine[Any, Any, _T]]: ...


@overload
def use_primary(func: Callable[_P, _R], /) -> Callable[_P, _R]: ...


def use_primary(func: Callable[_P, Any] | None = None, /) -> UsePrimary | Callable[_P, Any]:
    """Send the reads of PrimaryReplica blocks to their primary, here and in what this calls.

    A context manager, an async context manager, and a decorator of sync and async
    functions (``@use_primary`` or ``@use_primary()``); scopes nest, and leaving one
    restores what the enclosing code had. Other threads and tasks are not affected;
    tasks started inside inherit it. ::

        with use_primary():
            order = Order.objects.get(pk=pk)    # the primary, even in a replica block

    Raises:
        UsageError: ``func`` is a class, a generator function or not callable.
    """
    if func is None:
        return _USE_PRIMARY
    return _USE_PRIMARY(func)
