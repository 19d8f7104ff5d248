"""Route locks: inside a locked request, a block may not route to another database.

``DatabaseMiddleware`` with ``DYNROUTE_REQUEST_LOCK`` locks each request to the
database its resolver chose, as Rails' ``ShardSelector`` does with ``lock: true``:
entering a block on any other alias or runtime configuration raises
:class:`~dynroute.exceptions.RouteLockedError`, so a request of tenant A cannot reach
tenant B's database by mistake. :func:`unlocked` allows it where it is meant.

The lock lives in a ContextVar (it follows tasks and ``sync_to_async``), as a linked
list of ``(alias, enclosing)``: ``alias`` ``None`` is an ``unlocked()`` scope. Blocks
check it on entry only once a lock was set in the process (the switch
``_switches.locks_used``): until then their entry costs nothing more.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeAlias, TypeVar, final, overload

from dynroute import _switches
from dynroute.core import SyncScope
from dynroute.exceptions import RouteLockedError, RouteStateError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

__all__ = ["Unlocked", "check", "lock", "release", "unlocked"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

#: ``(alias, enclosing)``: the alias the code here is locked to (``None``: unlocked).
_Lock: TypeAlias = "tuple[str | None, _Lock | None]"
_LOCK: ContextVar[_Lock | None] = ContextVar("dynroute_lock", default=None)


def lock(alias: str) -> None:
    """Lock the code here to ``alias`` until :func:`release`."""
    if not _switches.locks_used:
        # Blocks that skip their checks on entry check again from now on, the lock too.
        _switches.use_locks()
    _LOCK.set((alias, _LOCK.get()))


def release() -> None:
    """End the innermost lock or ``unlocked()`` scope here.

    Raises:
        RouteStateError: None is active here.
    """
    state = _LOCK.get()
    if state is None:
        msg = (
            "A route lock was released without being active here: a lock must be released "
            "in the thread or task that set it, once."
        )
        raise RouteStateError(msg)
    _LOCK.set(state[1])


def check(alias: str | None, block: object) -> None:
    """Refuse to enter ``block`` (routing to ``alias``) where the code is locked to another.

    Raises:
        RouteLockedError: A lock to another alias is in force here.
    """
    state = _LOCK.get()
    if state is None or state[0] is None or state[0] == alias:
        return
    target = f"database {alias!r}" if alias is not None else "a policy with no single database"
    msg = (
        f"This request is locked to database {state[0]!r} (DYNROUTE_REQUEST_LOCK): "
        f"{block!r} routes to {target}. Where reaching another database is meant, "
        "enter the block inside `with dynroute.unlocked():`."
    )
    raise RouteLockedError(msg)


@final
class Unlocked(SyncScope):
    """A scope in which a request's route lock is lifted; made by :func:`unlocked`."""

    __slots__ = ()
    _decorates = ("unlocked()", "unlocked")

    def __repr__(self) -> str:
        """Show the call that made it."""
        return "unlocked()"

    def __enter__(self) -> None:
        """Allow blocks on any database here until the scope exits."""
        _LOCK.set((None, _LOCK.get()))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore the lock in force before the scope.

        Raises:
            RouteStateError: No ``unlocked()`` scope is the innermost here.
        """
        state = _LOCK.get()
        if state is None or state[0] is not None:
            msg = (
                "unlocked() was left without being the innermost scope here: a scope must be "
                "left in the thread or task that entered it, once per entry."
            )
            raise RouteStateError(msg)
        _LOCK.set(state[1])


_UNLOCKED: Final = Unlocked()


@overload
def unlocked() -> Unlocked: ...


@overload
def unlocked(
    func: Callable[_P, Coroutine[Any, Any, _T]], /
) -> Callable[_P, Coroutine[Any, Any, _T]]: ...


@overload
def unlocked(func: Callable[_P, _R], /) -> Callable[_P, _R]: ...


def unlocked(func: Callable[_P, Any] | None = None, /) -> Unlocked | Callable[_P, Any]:
    """Allow blocks on any database here, inside a request locked to one.

    For the code that is meant to reach several databases in a request that
    ``DatabaseMiddleware`` locked (``DYNROUTE_REQUEST_LOCK``): an admin view reading
    every tenant, say. A context manager, an async context manager, and a decorator of
    sync and async functions; scopes nest. Outside a locked request it changes
    nothing. ::

        with dynroute.unlocked():
            for tenant in tenants:
                with in_database(tenant.database):
                    totals[tenant] = Order.objects.count()

    Raises:
        UsageError: ``func`` is a class, a generator function or not callable.
    """
    if func is None:
        return _UNLOCKED
    return _UNLOCKED(func)
