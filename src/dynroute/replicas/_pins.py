"""Where reads go to the primary, per thread and task: pins after writes, and ``use_primary()``.

Inside the outermost active ``PrimaryReplica`` block, :data:`PINS` holds the
primaries this thread or task wrote to, and :data:`EVERY` while a ``use_primary()``
scope is active; it is ``None`` outside every such block. One ContextVar for both, so
that a read asks it once. A child task inherits it but never hands it back to its
siblings; ``sync_to_async`` hands it back to its caller (DJANGO_NOTES §13), so a write
made through the async ORM pins the code that awaited it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, final, overload

from dynroute.core import SyncScope
from dynroute.exceptions import RouteStateError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

__all__ = [
    "EVERY",
    "EVERY_PRIMARY",
    "FORCED",
    "PINS",
    "USED_PRIMARY",
    "UsePrimary",
    "describe_pins",
    "get_pins",
    "has_written",
    "use_primary",
    "used_primary",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

#: Where reads of this thread or task go to the primary, inside the outermost active
#: PrimaryReplica block: the primaries it has written to there, and :data:`EVERY`
#: while a ``use_primary()`` scope is active; ``None`` outside every such block.
PINS: ContextVar[frozenset[str] | None] = ContextVar("dynroute_pins", default=None)
#: Its getter, bound once: the read decision and the write hook call it on every
#: read and statement (``None``: no PrimaryReplica block is active here).
get_pins = PINS.get

#: In :data:`PINS`: every primary (``use_primary()``). Never an alias: PrimaryReplica
#: refuses an empty one.
EVERY: Final = ""
EVERY_PRIMARY: Final = frozenset((EVERY,))

#: How many ``use_primary()`` scopes are active here.
FORCED: ContextVar[int] = ContextVar("dynroute_use_primary", default=0)

#: Whether ``use_primary()`` was entered here inside the outermost active
#: PrimaryReplica block (the middleware streams such a response from the primary).
USED_PRIMARY: ContextVar[bool] = ContextVar("dynroute_used_primary", default=False)


def has_written() -> bool:
    """Return whether this thread or task wrote to the primary of an active block here.

    The request middleware's question: its block's primary, or a tenant's inside it.
    """
    pins = PINS.get()
    return pins is not None and not pins <= EVERY_PRIMARY


def describe_pins(pins: frozenset[str] | None) -> str | None:
    """Say where ``pins`` (as :func:`get_pins` gives them) send reads, or ``None`` if nowhere."""
    if not pins:
        return None
    return ", ".join(
        "every primary (use_primary())" if pin == EVERY else pin for pin in sorted(pins)
    )


def used_primary() -> bool:
    """Return whether ``use_primary()`` was entered in the active PrimaryReplica blocks here."""
    return USED_PRIMARY.get()


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
        FORCED.set(FORCED.get() + 1)
        pins = PINS.get()
        if pins is not None:
            USED_PRIMARY.set(True)
            PINS.set(pins | EVERY_PRIMARY)

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
        depth = FORCED.get()
        if not depth:
            msg = (
                "use_primary() was left without being active here: a scope must be left in "
                "the thread or task that entered it, once per entry."
            )
            raise RouteStateError(msg)
        FORCED.set(depth - 1)
        pins = PINS.get()
        if depth == 1 and pins is not None:
            PINS.set(pins - EVERY_PRIMARY)


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
