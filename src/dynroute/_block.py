"""``in_database``: a context manager, async context manager and decorator.

One :class:`InDatabase` object can be entered many times, nested in itself, and
shared by threads and tasks: it holds its policy, its target and what can be computed
from them once. What an entry changes lives in the route stack
(:mod:`dynroute._state`), which is per thread and per task; the object itself only
ever learns, once, that its alias exists in settings (DJANGO_NOTES §6).
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    NoReturn,
    cast,
    final,
    overload,
)

from django.core.signals import setting_changed
from django.db import connections

from dynroute import _locks, _replicas, _runtime, _signals
from dynroute._decorating import Decorator
from dynroute._policies import (
    ReadOnly,
    ReadWrite,
    RoutingPolicy,
    WriteOnly,
    fixed_answers,
    strategy_for,
)
from dynroute._router import DynamicDbRouter, forget_router_check, require_router
from dynroute._state import ASK, Answer, Frame, get_frame, pop, push, set_frame
from dynroute._targets import (
    DatabaseConfiguration,
    DatabaseTarget,
    configuration_key,
    to_target,
)
from dynroute._writes import enter_scope, install_everywhere, leave_scope
from dynroute.exceptions import DynrouteError, UnknownDatabaseError, UsageError

if sys.version_info >= (3, 13):
    from typing import TypeVar as DefaultTypeVar
else:  # pragma: no cover - TypeVar defaults (PEP 696) are new in 3.13
    from typing_extensions import TypeVar as DefaultTypeVar

if TYPE_CHECKING:
    from collections.abc import Hashable
    from types import TracebackType

    from dynroute._targets import TargetLike

__all__ = ["InDatabase", "Route", "in_database", "rearm_blocks"]

logger = logging.getLogger("dynroute")

# What route.alias is: str for a block with a target, str | None for a custom policy.
_AliasT_co = DefaultTypeVar("_AliasT_co", bound="str | None", default="str | None", covariant=True)


class _Unset:
    """Marks an argument that was not passed."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


@final
@dataclass(frozen=True, slots=True)
class Route(Generic[_AliasT_co]):
    """What an ``in_database`` block routes to, as given by ``with ... as route``.

    Attributes:
        alias: The alias of the block's target, for ``.using(route.alias)``,
            ``transaction.atomic(using=route.alias)``, ``connections[route.alias]``
            and logs; for a runtime configuration, the alias it is registered under;
            for a :class:`~dynroute.PrimaryReplica`, the primary. ``None`` for a
            custom policy, which has no single target (type checkers see ``str`` for
            blocks with a target or a PrimaryReplica, ``str | None`` otherwise).
        policy: The policy that routes the block's queries.
    """

    alias: _AliasT_co
    policy: RoutingPolicy


@final
class InDatabase(Decorator, Generic[_AliasT_co]):
    """A block that routes queries by a policy; made by :func:`in_database`.

    Use it as ``with``, ``async with``, or a decorator of sync and async functions.
    ``InDatabase[str]`` is a block with a target; bare ``InDatabase`` is any block.
    """

    _decorates = ("in_database()", "route")
    __slots__ = (
        "__weakref__",
        "_ask",
        "_leaving",
        "_prevent",
        "_primary_replica",
        "_read",
        "_route",
        "_runtime",
        "_setup",
        "_top_frame",
        "_write",
    )

    def __init__(self, policy: RoutingPolicy, *, prevent_writes: bool = False) -> None:
        """Route by ``policy``, refusing writes if ``prevent_writes``. Use :func:`in_database`."""
        target: DatabaseTarget | None
        read: Answer
        write: Answer
        fixed = fixed_answers(policy)
        if fixed is not None:
            target, read, write = fixed
        elif type(policy) is _replicas.PrimaryReplica:
            # Writes go to the primary, always: only reads ask the entry.
            target, read, write = None, ASK, policy.primary
        else:
            target, read, write = None, ASK, ASK
        # Whether entering must do something before routing: check that dynroute's
        # router is installed and that a configured alias exists (once: Django does
        # not support removing a database at run time; again after DATABASE_ROUTERS
        # changes), or set up a runtime configuration (every time).
        self._setup = True
        self._runtime = target if type(target) is DatabaseConfiguration else None
        # A primary/replica block chooses its replica on every entry (so never skips
        # _set_up) and forgets its writes on leaving the outermost.
        self._primary_replica = policy if type(policy) is _replicas.PrimaryReplica else None
        self._read = read
        self._write = write
        self._ask = policy if fixed is None else None
        self._prevent = prevent_writes
        # Whether leaving must do more than restore the route (hence one test per exit).
        self._leaving = (
            self._runtime is not None or prevent_writes or self._primary_replica is not None
        )
        if target is not None:
            alias: str | None = target.alias
        elif self._primary_replica is not None:
            alias = self._primary_replica.primary
        else:
            alias = None
        route = Route(alias, policy)
        self._route = cast("Route[_AliasT_co]", route)
        # The frame of an entry with no enclosing block is always the same: build it
        # once (frames are immutable, so entries in any thread or task can share it).
        self._top_frame: Frame = (self, read, write, self._ask, None)

    @property
    def route(self) -> Route[_AliasT_co]:
        """What this block routes to; the same object ``__enter__`` returns."""
        return self._route

    def __repr__(self) -> str:
        """Show the policy, which shows the target (never a password)."""
        prevent = ", prevent_writes=True" if self._prevent else ""
        return f"in_database(policy={self._route.policy!r}{prevent})"

    def __enter__(self) -> Route[_AliasT_co]:
        """Route the queries of the current thread or task until the block exits.

        Raises:
            UnknownDatabaseError: The target alias is not in ``settings.DATABASES``.
            ConfigurationError: A runtime configuration cannot be registered.
            DatabaseConnectionError: A runtime configuration's database cannot be
                reached; nothing is left registered.
        """
        if self._setup:
            return self._enter_set_up()
        # The body of _state.push, inlined: this runs on every entry.
        parent = get_frame()
        if parent is None:
            set_frame(self._top_frame)
            return self._route
        read = self._read
        write = self._write
        if read is None:
            read = parent[1]
        if write is None:
            write = parent[2]
        set_frame((self, read, write, self._ask, parent))
        return self._route

    def _enter_set_up(self) -> Route[_AliasT_co]:
        """Enter after :meth:`_set_up`, with this entry's own policy for a PrimaryReplica."""
        ask = self._entry_policy()
        self._set_up()
        push(self, self._read, self._write, ask)
        if self._primary_replica is not None:
            _replicas.entered()
        if _signals.listening:
            # Its exits report too, until an entry with nothing listening resets it.
            self._leaving = True
            _signals.entered(self)
        return self._route

    def _entry_policy(self) -> RoutingPolicy | None:
        """The policy the frame of this entry asks (a PrimaryReplica's entry, with its replica).

        Made before anything else of the entry: a choose function may raise.
        """
        if self._primary_replica is not None:
            return self._primary_replica.enter()
        return self._ask

    def _set_up(self) -> None:
        """Check the router and the alias (the first time), register the configuration.

        And, for a block that prevents writes, start doing so (on every entry).
        """
        require_router()
        if _locks.used:
            _locks.check(self._route.alias, self)
        if self._runtime is not None:
            _runtime.enter(self._runtime)
        elif self._primary_replica is not None:
            self._primary_replica.check_aliases()
            install_everywhere()  # the write hook pins on writes that skip the router
        else:
            alias = self._route.alias
            if alias is not None and alias not in connections.settings:
                _unknown_alias(alias)
            if not self._prevent and not _locks.used and not _signals.listening:
                # Shared by threads: every thread that gets here writes the same. Once a
                # route lock was set in the process, every entry checks it here; while
                # a signal has a receiver, every entry is reported from here.
                self._setup = False
                self._leaving = False  # as built: nothing to do on exit but the route
                _CHECKED.add(self)
                if _checks_needed():
                    # Set by another thread since the test above, which re-armed the
                    # blocks before this one was among them.
                    self._setup = True
        if self._prevent:
            enter_scope(self, enabled=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; close what a runtime configuration opened."""
        # The usual cases of _state.pop, inlined: this runs on every exit.
        top = get_frame()
        if top is self._top_frame:
            set_frame(None)
        elif top is not None and top[0] is self:
            set_frame(top[4])
        else:
            self._release(pop(self))
        if self._leaving:
            self._leave()

    def _leave(self) -> None:
        """Report the exit, end the block's write prevention, release its configuration."""
        if _signals.get_timing() is not None:
            _signals.exited(self)
        try:
            if self._primary_replica is not None:
                _replicas.leave()
            if self._prevent:
                leave_scope(self)
        finally:
            if self._runtime is not None:
                _runtime.leave(self._runtime)

    def _release(self, dropped: list[object]) -> None:
        """Release the runtime configurations of blocks dropped without being left.

        Blocks are dropped when an enclosing block is left while they are still
        active here: a generator suspended inside a block and abandoned, or a block
        entered by hand and never left. Their route was in force outside the code
        that entered them; the log says so, once per occurrence.
        """
        if not dropped:
            return
        logger.warning(
            "%r was left while %d block(s) entered inside it were still active (a generator "
            "suspended inside a block, or a block never left): they were dropped with it",
            self,
            len(dropped),
        )
        for owner in dropped:
            if isinstance(owner, InDatabase):  # always: only blocks push frames
                owner._drop()  # noqa: SLF001 - a block of this class

    def _drop(self) -> None:
        """Undo this block's entry, which an enclosing block's exit dropped."""
        if self._primary_replica is not None:
            _replicas.leave()
        if self._prevent:
            # Its scope may be gone already, dropped by an enclosing scope's exit.
            leave_scope(self, missing_ok=True)
        if self._runtime is not None:
            _runtime.leave(self._runtime)

    async def __aenter__(self) -> Route[_AliasT_co]:
        """Route the queries of the current task, including the async ORM's.

        A runtime configuration connects in the thread the async ORM uses.

        Raises:
            UnknownDatabaseError: The target alias is not in ``settings.DATABASES``.
            ConfigurationError: A runtime configuration cannot be registered.
            DatabaseConnectionError: A runtime configuration's database cannot be
                reached; nothing is left registered.
        """
        ask = self._entry_policy()
        if self._runtime is not None:
            require_router()
            if _locks.used:
                _locks.check(self._route.alias, self)
            await _runtime.aenter(self._runtime)
            if self._prevent:
                enter_scope(self, enabled=True)
        elif self._setup:
            self._set_up()
        push(self, self._read, self._write, ask)
        if self._primary_replica is not None:
            _replicas.entered()
        if _signals.listening:
            _signals.entered(self)
        return self._route

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; close what the async ORM opened."""
        self._release(pop(self))
        if _signals.get_timing() is not None:
            _signals.exited(self)
        try:
            if self._primary_replica is not None:
                _replicas.leave()
            if self._prevent:
                leave_scope(self)
        finally:
            if self._runtime is not None:
                await _runtime.aleave(self._runtime)


#: Blocks whose router and alias checks have passed, to be checked again on their next
#: entry when DATABASE_ROUTERS changes (a test's override_settings, for example).
_CHECKED: weakref.WeakSet[InDatabase[Any]] = weakref.WeakSet()


def _recheck_blocks(*, setting: str, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    if setting == "DATABASE_ROUTERS":
        forget_router_check()
        rearm_blocks()


def _checks_needed() -> bool:
    """Whether every entry must take the checked path: a route lock, or a receiver."""
    return _locks.used or _signals.listening


def rearm_blocks() -> None:
    """Make every block check again on its next entry (the router, a route lock)."""
    for block in list(_CHECKED):
        # A block of this module, re-armed from a receiver of this module.
        block._setup = True  # noqa: SLF001  # pyright: ignore[reportPrivateUsage]
    _CHECKED.clear()


setting_changed.connect(_recheck_blocks, dispatch_uid="dynroute._block._recheck_blocks")


def _unknown_alias(alias: str) -> NoReturn:
    """Raise the error for an alias that is not in settings."""
    configured = ", ".join(repr(name) for name in connections.settings)
    msg = (
        f"The database alias {alias!r} is not in settings.DATABASES (configured: "
        f"{configured}). Add it to DATABASES, or pass in_database() a settings dict "
        "to use a database that is not configured."
    )
    raise UnknownDatabaseError(msg)


@overload
def in_database(
    target: TargetLike,
    /,
    *,
    read: bool = True,
    write: bool = False,
    alias: str | None = None,
    prevent_writes: bool = False,
) -> InDatabase[str]: ...


@overload
def in_database(
    *,
    policy: ReadOnly | ReadWrite | WriteOnly | _replicas.PrimaryReplica,
    prevent_writes: bool = False,
) -> InDatabase[str]: ...


@overload
def in_database(
    *, policy: RoutingPolicy, prevent_writes: bool = False
) -> InDatabase[str | None]: ...


def in_database(  # noqa: PLR0913 - the public signature: a target, its options, or a policy
    target: TargetLike | _Unset = _UNSET,
    /,
    *,
    read: bool | _Unset = _UNSET,
    write: bool | _Unset = _UNSET,
    alias: str | None = None,
    policy: RoutingPolicy | _Unset = _UNSET,
    prevent_writes: bool | _Unset = _UNSET,
) -> InDatabase[Any]:
    """Route the queries of a block or of a function's calls to a database.

    Every query made while the block is active in the current thread or task goes
    where the block says, including queries made deep inside other code and through
    the async ORM. Use it as a context manager, an async context manager, or a
    decorator of sync and async functions::

        with in_database("replica"):                 # reads to "replica"
            report = build_report(Order.objects.filter(paid=True))

        with in_database("archive", write=True) as route:   # reads and writes
            Order.objects.create(...)
            log.info("archived to %s", route.alias)

        @in_database({"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db"})
        def count_rows(): ...

    Args:
        target: Where to route: an alias from ``settings.DATABASES``; a
            settings-style dict for a database that is not configured (registered on
            entry, torn down on exit); or a :data:`~dynroute.DatabaseTarget`.
        read: Route reads to ``target``. If ``False``, reads follow the enclosing
            block, then Django's usual rules.
        write: Route writes to ``target``. If ``False``, writes follow the enclosing
            block, then Django's usual rules (``"default"`` for new objects).
        alias: The alias to register a settings dict under (default: one chosen by
            dynroute, stable for the same settings).
        policy: Instead of ``target``/``read``/``write``: a :class:`RoutingPolicy`
            that decides per query. ``in_database(t, read=r, write=w)`` is
            ``in_database(policy=ReadOnly(t))`` etc.
        prevent_writes: Refuse every write inside the block, as a block inside
            :func:`~dynroute.prevent_writes` does.

    Returns:
        The block. ``with ... as route`` gives a :class:`Route`.

    Raises:
        UsageError: Both ``target`` and ``policy`` are given, or neither; ``policy``
            has no ``db_for_read``/``db_for_write``; ``read``/``write`` is not a
            ``bool`` or is given with ``policy``.
        InvalidTargetError: ``target`` is not an alias, a mapping or a target, or is
            a malformed configuration (a ``ValueError``, as in
            django-dynamic-db-router).
        UnknownDatabaseError: On entry, the alias is not in ``settings.DATABASES``.
    """
    if policy is _UNSET and alias is None and prevent_writes is _UNSET and type(target) is str:
        try:
            cached = _BLOCKS.get((target, read, write))
        except TypeError:  # an unhashable flag, refused below
            cached = None
        # Identity, not equality: read=1 must still be refused, though 1 == True.
        if cached is not None and cached[1] is read and cached[2] is write:
            return cached[0]
    prevent = _flag("prevent_writes", prevent_writes, default=False)
    if not isinstance(policy, _Unset):
        return _policy_block(
            policy, target=target, read=read, write=write, alias=alias, prevent_writes=prevent
        )
    if isinstance(target, _Unset):
        msg = "in_database() needs a target (an alias or a settings dict) or a policy=."
        raise UsageError(msg)
    kind = type(target)  # not narrowing target: to_target below takes any object
    key: object = target if kind is str else None
    if kind is dict and not prevent:
        # A settings dict, as a database-per-tenant site passes on every request:
        # checking and completing it costs more than the block's entry and exit.
        key, block = _configuration_block(target, alias, read, write)
        if block is not None:
            return block
    try:
        routes_reads = _flag("read", read, default=True)
        routes_writes = _flag("write", write, default=False)
        chosen = to_target(target, alias=alias)
    except DynrouteError as error:
        # A settings dict may hold a password, and tracebacks show frame locals
        # (Django's technical 500 page): drop it and its key (a copy), and the
        # frames below, which hold it too. The message says what is wrong.
        del target, key
        raise error.with_traceback(None) from None
    built: InDatabase[str] = InDatabase(
        strategy_for(chosen, read=routes_reads, write=routes_writes), prevent_writes=prevent
    )
    if key is not None and not prevent:
        _remember(key, read, write, built)
    return built


def _policy_block(  # noqa: PLR0913 - in_database's arguments, checked together
    policy: RoutingPolicy,
    *,
    target: object,
    read: object,
    write: object,
    alias: str | None,
    prevent_writes: bool,
) -> InDatabase[Any]:
    """Build a block on ``policy``, refusing the arguments that go with a target."""
    if not isinstance(target, _Unset):
        msg = (
            "in_database() takes a target or a policy=, not both: a policy names its own "
            "targets. Pass policy=ReadWrite(target) (or another strategy) alone."
        )
        raise UsageError(msg)
    if not isinstance(read, _Unset) or not isinstance(write, _Unset) or alias is not None:
        msg = (
            "read=, write= and alias= go with a target, not with policy=: the policy "
            "decides both directions."
        )
        raise UsageError(msg)
    _check_policy(policy)
    return InDatabase(policy, prevent_writes=prevent_writes)


#: Blocks by the arguments that made them (an alias, or the key of a settings dict
#: and its alias=, see configuration_key): a block holds no per-entry state, so
#: ``with in_database(x):`` can reuse one instead of building and checking a new one
#: on every entry. The last ``_BLOCKS_MAX`` built are kept, first in, first out (a
#: dict keeps insertion order; a hit moves nothing, so the hot path stays a lookup).
#: Keys of settings dicts hold their contents, as the blocks do: never shown
#: (in_database drops its own reference to a key before an error leaves it).
_BLOCKS: dict[tuple[object, object, object], tuple[InDatabase[str], object, object]] = {}
_BLOCKS_MAX = 256
# Taken by writers only (a miss builds a block, which costs far more): finding the
# oldest key iterates the dict, which another writer must not resize meanwhile.
_BLOCKS_LOCK = threading.Lock()


def _remember(key: object, read: object, write: object, block: InDatabase[str]) -> None:
    with _BLOCKS_LOCK:
        if len(_BLOCKS) >= _BLOCKS_MAX:
            del _BLOCKS[next(iter(_BLOCKS))]
        _BLOCKS[key, read, write] = (block, read, write)


def _configuration_block(
    settings: object, alias: str | None, read: object, write: object
) -> tuple[Hashable | None, InDatabase[str] | None]:
    """Return the key of a settings dict and the block already built from it, if any."""
    key = configuration_key(settings, alias)
    if key is None:
        return None, None
    try:
        cached = _BLOCKS.get((key, read, write))
    except TypeError:  # an unhashable flag, refused by the caller
        return None, None
    if cached is not None and cached[1] is read and cached[2] is write:
        return key, cached[0]
    return key, None


def _flag(name: str, value: object, *, default: bool) -> bool:
    if isinstance(value, _Unset):
        return default
    if not isinstance(value, bool):
        msg = f"in_database({name}=...) must be True or False, got {type(value).__name__}."
        raise UsageError(msg)
    return value


def _check_policy(policy: object) -> None:
    if isinstance(policy, DynamicDbRouter):
        msg = (
            "in_database(policy=...) cannot take dynroute's own router: it answers from "
            "the blocks, so as a block's policy it would ask itself. Pass the policy "
            "of the routing you want, as ReadWrite('replica') or a router of your own."
        )
        raise UsageError(msg)
    if isinstance(policy, type):
        msg = (
            f"in_database(policy=...) needs a policy object, not the class "
            f"{policy.__qualname__}: instantiate it, as in policy=ReadOnly('replica')."
        )
        raise UsageError(msg)
    missing = [
        name
        for name in ("db_for_read", "db_for_write")
        if not callable(getattr(policy, name, None))
    ]
    if missing:
        msg = (
            f"in_database(policy=...) needs an object with db_for_read() and "
            f"db_for_write(); {type(policy).__name__} has no {'() or '.join(missing)}(). "
            "Use ReadOnly/ReadWrite/WriteOnly(target), or any class with both methods."
        )
        raise UsageError(msg)
