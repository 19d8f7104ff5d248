"""``in_database``: a context manager, async context manager and decorator.

One :class:`InDatabase` object can be entered many times, nested in itself, and
shared by threads and tasks: it holds only its policy and target. What an entry
changes lives in the route stack (:mod:`dynroute._state`), which is per thread and per
task; nothing is stored on the object (DJANGO_NOTES §6).
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, final, overload

from django.db import connections

from dynroute import _runtime
from dynroute._policies import RoutingPolicy, fixed_answers, strategy_for
from dynroute._state import ASK, Answer, pop, push
from dynroute._targets import DatabaseAlias, DatabaseConfiguration, DatabaseTarget, to_target
from dynroute.exceptions import UnknownDatabaseError, UsageError

if sys.version_info >= (3, 12):
    from inspect import iscoroutinefunction
else:  # pragma: no cover - before 3.12, inspect misses markcoroutinefunction()
    from asgiref.sync import iscoroutinefunction

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from types import TracebackType

    from dynroute._targets import TargetLike

__all__ = ["InDatabase", "Route", "in_database"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


class _Unset:
    """Marks an argument that was not passed."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


@final
@dataclass(frozen=True, slots=True)
class Route:
    """What an ``in_database`` block routes to, as given by ``with ... as route``.

    Attributes:
        alias: The alias of the block's target, for ``.using(route.alias)``,
            ``transaction.atomic(using=route.alias)`` and logs; for a runtime
            configuration, the alias it is registered under. ``None`` for a custom
            policy, which has no single target.
        policy: The policy that routes the block's queries.
    """

    alias: str | None
    policy: RoutingPolicy


@final
class InDatabase:
    """A block that routes queries by a policy; made by :func:`in_database`.

    Use it as ``with``, ``async with``, or a decorator of sync and async functions.
    """

    __slots__ = ("_read", "_route", "_target", "_write")

    def __init__(self, policy: RoutingPolicy) -> None:
        """Route by ``policy``. Use :func:`in_database`."""
        target: DatabaseTarget | None
        read: Answer
        write: Answer
        fixed = fixed_answers(policy)
        if fixed is None:
            target, read, write = None, ASK, ASK
        else:
            target, read, write = fixed
        self._target = target
        self._read = read
        self._write = write
        self._route = Route(target.alias if target is not None else None, policy)

    @property
    def route(self) -> Route:
        """What this block routes to; the same object ``__enter__`` returns."""
        return self._route

    def __repr__(self) -> str:
        """Show the policy, which shows the target (never a password)."""
        return f"in_database(policy={self._route.policy!r})"

    def __enter__(self) -> Route:
        """Route the queries of the current thread or task until the block exits.

        Raises:
            UnknownDatabaseError: The target alias is not in ``settings.DATABASES``.
            ConfigurationError: A runtime configuration cannot be set up.
        """
        target = self._target
        if target is not None:
            _enter_target(target)
        push(self, self._read, self._write, self._route.policy if self._read is ASK else None)
        return self._route

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; tear down a runtime configuration's part."""
        try:
            pop(self)
        finally:
            if type(self._target) is DatabaseConfiguration:
                _runtime.leave(self._target)

    async def __aenter__(self) -> Route:
        """Route the queries of the current task, including the async ORM's."""
        route = self.__enter__()
        if type(self._target) is DatabaseConfiguration:
            try:
                await _runtime.aenter_orm_thread(self._target)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return route

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the enclosing route; close what the async ORM opened."""
        try:
            pop(self)
        finally:
            if type(self._target) is DatabaseConfiguration:
                await _runtime.aleave(self._target)

    @overload
    def __call__(
        self, func: Callable[_P, Coroutine[Any, Any, _T]], /
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def __call__(self, func: Callable[_P, _R], /) -> Callable[_P, _R]: ...

    def __call__(self, func: Callable[_P, Any], /) -> Callable[_P, Any]:
        """Route every call of ``func``; an ``async def`` stays a coroutine function.

        Raises:
            UsageError: ``func`` is not callable, is a class, or is a generator
                function (its route would leak to the consumer between yields).
        """
        if isinstance(func, type) or not callable(func):
            msg = f"in_database() decorates functions, not {type(func).__name__} objects."
            raise UsageError(msg)
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            name = getattr(func, "__qualname__", repr(func))
            msg = (
                f"in_database() cannot decorate the generator function {name}: the route "
                "would stay active in the code consuming it between yields. Use "
                "'with in_database(...):' inside it around the queries only, and yield "
                "outside that block (for example, collect the rows into a list first)."
            )
            raise UsageError(msg)
        if iscoroutinefunction(func):
            return self._wrap_async(func)
        return self._wrap_sync(func)

    def _wrap_sync(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def routed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self:
                return func(*args, **kwargs)

        return routed

    def _wrap_async(
        self, func: Callable[_P, Awaitable[_T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]:
        @functools.wraps(func)
        async def routed(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            async with self:
                return await func(*args, **kwargs)

        return routed


def _enter_target(target: DatabaseTarget) -> None:
    """Make ``target`` usable for the block being entered, or raise."""
    if type(target) is DatabaseAlias:
        if target.alias not in connections.settings:
            raise UnknownDatabaseError(_unknown_alias(target.alias))
    else:
        _runtime.enter(target)


def _unknown_alias(alias: str) -> str:
    configured = ", ".join(repr(name) for name in connections.settings)
    return (
        f"The database alias {alias!r} is not in settings.DATABASES (configured: "
        f"{configured}). Add it to DATABASES, or pass in_database() a settings dict "
        "to use a database that is not configured."
    )


@overload
def in_database(
    target: TargetLike, /, *, read: bool = True, write: bool = False, alias: str | None = None
) -> InDatabase: ...


@overload
def in_database(*, policy: RoutingPolicy) -> InDatabase: ...


def in_database(
    target: TargetLike | _Unset = _UNSET,
    /,
    *,
    read: bool | _Unset = _UNSET,
    write: bool | _Unset = _UNSET,
    alias: str | None = None,
    policy: RoutingPolicy | _Unset = _UNSET,
) -> InDatabase:
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
    if isinstance(policy, _Unset):
        if isinstance(target, _Unset):
            msg = "in_database() needs a target (an alias or a settings dict) or a policy=."
            raise UsageError(msg)
        routes_reads = _flag("read", read, default=True)
        routes_writes = _flag("write", write, default=False)
        return InDatabase(
            strategy_for(to_target(target, alias=alias), read=routes_reads, write=routes_writes)
        )
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
    return InDatabase(policy)


def _flag(name: str, value: object, *, default: bool) -> bool:
    if isinstance(value, _Unset):
        return default
    if not isinstance(value, bool):
        msg = f"in_database({name}=...) must be True or False, got {type(value).__name__}."
        raise UsageError(msg)
    return value


def _check_policy(policy: object) -> None:
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
            f"db_for_write(); {type(policy).__name__} has no {' or '.join(missing)}(). "
            "Use ReadOnly/ReadWrite/WriteOnly(target), or any class with both methods."
        )
        raise UsageError(msg)
