"""Decorating functions with a block: shared by ``in_database`` and ``prevent_writes``."""

from __future__ import annotations

import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar, cast, overload

from dynroute.exceptions import UsageError

if sys.version_info >= (3, 12):
    from inspect import iscoroutinefunction, markcoroutinefunction
else:  # pragma: no cover - before 3.12, inspect misses markcoroutinefunction()
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from types import TracebackType

__all__ = [
    "Block",
    "Decorator",
    "SyncScope",
    "decorate",
    "iscoroutinefunction",
    "markcoroutinefunction",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


class Block(Protocol):
    """A context manager that is an async context manager too."""

    def __enter__(self) -> object: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None: ...
    async def __aenter__(self) -> object: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None: ...


def decorate(block: Block, func: Callable[_P, Any], name: str, held: str) -> Callable[_P, Any]:
    """Return ``func`` running inside ``block`` at every call; ``async def`` stays async.

    Args:
        block: What to enter around each call (``with``, or ``async with`` for a
            coroutine function).
        func: The function to decorate.
        name: The decorator's name for messages, as ``in_database()``.
        held: What the block keeps in force, for messages, as ``route``.

    Raises:
        UsageError: ``func`` is not callable, is a class, or is a generator function
            (the block would stay active in the code consuming it between yields).
    """
    given: object = func  # callers without a type checker pass anything
    if isinstance(given, type):
        msg = (
            f"{name} decorates functions, not classes ({given.__qualname__}): "
            "decorate its methods, or enter the block where the class is used."
        )
        raise UsageError(msg)
    if not callable(given):
        msg = f"{name} decorates functions, not {type(given).__name__} objects."
        raise UsageError(msg)
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        qualname = getattr(func, "__qualname__", repr(func))
        msg = (
            f"{name} cannot decorate the generator function {qualname}: the {held} "
            "would stay active in the code consuming it between yields. Use "
            f"'with {name[:-2]}(...):' inside it around the queries only, and yield "
            "outside that block (for example, collect the rows into a list first)."
        )
        raise UsageError(msg)
    if iscoroutinefunction(func):
        return _wrap_async(block, func)
    return _wrap_sync(block, func)


def _wrap_sync(block: AbstractContextManager[object], func: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(func)
    def routed(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with block:
            return func(*args, **kwargs)

    return routed


def _wrap_async(
    block: AbstractAsyncContextManager[object], func: Callable[_P, Awaitable[_T]]
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    @functools.wraps(func)
    async def routed(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        async with block:
            return await func(*args, **kwargs)

    return routed


class Decorator:
    """Makes a block a decorator: ``@block`` runs each call of a function inside it.

    A subclass names itself for messages: ``_decorates = (name, what it holds)``.
    """

    __slots__ = ()
    _decorates: ClassVar[tuple[str, str]]

    @overload
    def __call__(
        self, func: Callable[_P, Coroutine[Any, Any, _T]], /
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def __call__(self, func: Callable[_P, _R], /) -> Callable[_P, _R]: ...

    def __call__(self, func: Callable[_P, Any], /) -> Callable[_P, Any]:
        """Run every call of ``func`` in this block; an ``async def`` stays a coroutine function.

        Raises:
            UsageError: ``func`` is not callable, is a class, or is a generator function
                (the block would stay active in the code consuming it between yields).
        """
        name, held = self._decorates
        block = cast("Block", self)
        return decorate(block, func, name, held)


class SyncScope(Decorator):
    """A scope whose entry and exit do no I/O: ``async with`` runs the sync ones.

    What it sets lives in ContextVars, so it follows the task into the async ORM's
    thread as it would follow a ``with`` block's code.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # each subclass defines them

        def __enter__(self) -> None: ...

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc_value: BaseException | None,
            traceback: TracebackType | None,
        ) -> None: ...

    async def __aenter__(self) -> None:
        """As ``__enter__``."""
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """As ``__exit__``."""
        self.__exit__(exc_type, exc_value, traceback)
