"""``InDatabase``: a context manager, async context manager and decorator; and its ``Route``.

One :class:`InDatabase` object can be entered many times, nested in itself, and
shared by threads and tasks: it holds its policy, its target and what can be computed
from them once. What an entry changes lives in the route stack (``dynroute.core``),
which is per thread and per task (DJANGO_NOTES §6).

Its entry and exit are on the path of every request, so the usual case is written
out here and costs two ContextVar calls: a block on an alias whose checks have passed.
Every other entry and exit takes the checked path, where the features a block uses
join it (:mod:`dynroute.routing._features`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, cast, final

from dynroute import _switches
from dynroute.core import (
    ASK,
    DatabaseConfiguration,
    Decorator,
    RoutingPolicy,
    fixed_answers,
    get_frame,
    pop,
    push,
    set_frame,
)
from dynroute.replicas import PrimaryReplica
from dynroute.routing._features import Features, warn_dropped

if sys.version_info >= (3, 13):
    from typing import TypeVar as DefaultTypeVar
else:  # pragma: no cover - TypeVar defaults (PEP 696) are new in 3.13
    from typing_extensions import TypeVar as DefaultTypeVar

if TYPE_CHECKING:
    from types import TracebackType

    from dynroute.core import Answer, Frame

__all__ = ["InDatabase", "Route"]

# What route.alias is: str for a block with a target, str | None for a custom policy.
_AliasT_co = DefaultTypeVar("_AliasT_co", bound="str | None", default="str | None", covariant=True)


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
        "_features",
        "_leaving",
        "_read",
        "_route",
        "_setup",
        "_top_frame",
        "_write",
    )

    def __init__(self, policy: RoutingPolicy, *, prevent_writes: bool = False) -> None:
        """Route by ``policy``, refusing writes if ``prevent_writes``. Use :func:`in_database`."""
        features, read, write, ask = _plan(policy, prevent=prevent_writes)
        self._features = features
        # Whether the next entry takes the checked path: always for a block that uses
        # a feature; for a block on an alias, until its checks have passed (Django does
        # not support removing a database at run time), and again when a switch is
        # thrown (dynroute._switches re-arms it).
        self._setup = True
        self._read = read
        self._write = write
        self._ask = ask
        # Whether leaving must do more than restore the route (hence one test per exit).
        self._leaving = not features.plain
        self._route = cast("Route[_AliasT_co]", Route(features.alias, policy))
        # The frame of an entry with no enclosing block is always the same: build it
        # once (frames are immutable, so entries in any thread or task can share it).
        self._top_frame: Frame = (self, read, write, ask, None)

    @property
    def route(self) -> Route[_AliasT_co]:
        """What this block routes to; the same object ``__enter__`` returns."""
        return self._route

    def __repr__(self) -> str:
        """Show the policy, which shows the target (never a password)."""
        prevent = ", prevent_writes=True" if self._features.prevent else ""
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
            return self._enter_checked()
        # The body of core's push(), inlined: this runs on every entry.
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

    def _enter_checked(self) -> Route[_AliasT_co]:
        """Enter by the checked path: the checks, then the features of the block."""
        features = self._features
        ask = features.policy(self._ask)
        self._set_up()
        push(self, self._read, self._write, ask)
        if features.entered(self):
            # Its exits report too, until an entry with nothing listening resets it.
            self._leaving = True
        return self._route

    def _set_up(self) -> None:
        """Check and set up this entry; let a plain block skip that from now on, if it may."""
        features = self._features
        features.enter(self)
        if features.plain and not _switches.checks_needed():
            # Shared by threads: every thread that gets here writes the same.
            self._setup = False
            self._leaving = False  # as built: nothing to do on exit but the route
            _switches.skip_checks(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; close what a runtime configuration opened."""
        # The usual cases of core's pop(), inlined: this runs on every exit.
        top = get_frame()
        if top is self._top_frame:
            set_frame(None)
        elif top is not None and top[0] is self:
            set_frame(top[4])
        else:
            self._release(pop(self))
        if self._leaving:
            self._features.leave(self)

    async def __aenter__(self) -> Route[_AliasT_co]:
        """As ``__enter__``, for the current task: a runtime configuration connects in the
        thread the async ORM runs its queries in. It raises what ``__enter__`` raises.
        """  # noqa: D205 - the summary needs two lines
        features = self._features
        ask = features.policy(self._ask)
        if features.configuration is not None:
            await features.aenter(self)
        elif self._setup:
            self._set_up()
        push(self, self._read, self._write, ask)
        features.entered(self)
        return self._route

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; close what the async ORM opened."""
        self._release(pop(self))
        await self._features.aleave(self)

    def _release(self, dropped: list[object]) -> None:
        """Undo the entries of the blocks dropped by this one's exit (see core's pop())."""
        if dropped:
            warn_dropped(self, len(dropped))
        for owner in dropped:
            if isinstance(owner, InDatabase):  # always: only blocks push frames
                owner._drop()  # noqa: SLF001 - a block of this class

    def _drop(self) -> None:
        """Undo this block's entry, which an enclosing block's exit dropped."""
        self._features.drop(self)


def _plan(
    policy: RoutingPolicy, *, prevent: bool
) -> tuple[Features, Answer, Answer, RoutingPolicy | None]:
    """What a block on ``policy`` uses, and what it answers without asking the policy.

    Returns:
        Its features; its answer for reads and for writes (an alias, ``None``, or
        ``ASK``: see ``core.Frame``); the policy its frames ask per query, if any.
    """
    fixed = fixed_answers(policy)
    if fixed is not None:
        target, read, write = fixed
        configuration = target if type(target) is DatabaseConfiguration else None
        return Features(target.alias, configuration, None, prevent=prevent), read, write, None
    if type(policy) is PrimaryReplica:
        # Writes go to the primary, always: only reads ask the entry.
        primary = policy.primary
        return Features(primary, None, policy, prevent=prevent), ASK, primary, policy
    # A custom policy has no single database: it is asked per query, both ways.
    return Features(None, None, None, prevent=prevent), ASK, ASK, policy
