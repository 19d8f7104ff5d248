"""``atomic`` and ``on_commit`` that follow the route: ``using=None`` is where writes go.

Django's ``transaction.atomic()`` and ``on_commit()`` never ask a router (Django
ticket #32788): without ``using=``, they work on ``"default"``, whatever the block
says, so a transaction around writes routed elsewhere protects nothing. These take
the same arguments and behave the same, except that ``using=None`` means the database
the enclosing ``in_database`` block sends writes to.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from django.db import transaction

from dynroute.core import ASK, get_frame
from dynroute.exceptions import RouteStateError, UsageError

if sys.version_info >= (3, 12):
    from inspect import iscoroutinefunction
else:  # pragma: no cover - before 3.12, inspect misses markcoroutinefunction()
    from asgiref.sync import iscoroutinefunction

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["atomic", "on_commit", "write_alias"]

_C = TypeVar("_C", bound="Callable[..., Any]")


def write_alias(function: str) -> str | None:
    """Return the alias writes go to here, now, for a call of ``function(using=None)``.

    The write alias of the innermost block that routes writes; ``None``, which Django
    reads as ``"default"``, outside every block or where no block routes writes.

    Inside a :class:`~dynroute.PrimaryReplica` block, the primary.

    Raises:
        UsageError: A custom policy decides the writes here, per model: there is no
            single database to name.
    """
    frame = get_frame()
    if frame is None:
        return None
    answer = frame[2]
    if answer is ASK:
        msg = (
            f"{function}(using=None) inside in_database(policy=...) cannot tell which "
            "database the block writes to: its policy decides per model. Pass "
            f'{function}(using=route.alias) or {function}(using="...").'
        )
        raise UsageError(msg)
    return answer


class _RoutedAtomic(transaction.Atomic):
    """Django's ``Atomic``, on the database of the route where it is entered.

    Each entry resolves its database and enters a Django ``Atomic`` of its own, kept
    in a ContextVar: one object can be entered by several threads and tasks at once,
    and inside itself, each entry leaving the transaction it opened.
    """

    def __init__(self, using: str | None, savepoint: bool, durable: bool) -> None:  # noqa: FBT001 - Django's signature
        super().__init__(using, savepoint, durable)
        self._arguments = (using, savepoint, durable)

    def __call__(self, func: _C) -> _C:
        """Run every call of ``func`` in a transaction, as Django's ``@atomic`` does.

        Raises:
            UsageError: ``func`` is a coroutine function: its body would run after
                the transaction ended (Django's ``atomic`` is synchronous only).
        """
        if iscoroutinefunction(func):
            name = getattr(func, "__qualname__", None) or repr(func)
            msg = (
                f"dynroute.atomic cannot decorate the coroutine function {name}: its body "
                "would run after the transaction ended. Use it on a sync function called "
                "through sync_to_async()."
            )
            raise UsageError(msg)
        return super().__call__(func)

    def __enter__(self) -> None:
        using, savepoint, durable = self._arguments
        if using is None:
            using = write_alias("atomic")
        entry = transaction.Atomic(using, savepoint, durable)
        entry.__enter__()
        _ENTRIES.set((self, entry, _ENTRIES.get()))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # Atomic blocks end innermost first (Django relies on it too).
        top = _ENTRIES.get()
        if top is None or top[0] is not self:
            msg = (
                "dynroute.atomic() was left without being the innermost active here: an "
                "atomic block is left in the thread or task that entered it, innermost "
                "first, once per entry."
            )
            raise RouteStateError(msg)
        _ENTRIES.set(top[2])
        top[1].__exit__(exc_type, exc_value, exc_tb)


#: The active entries of route-following atomic blocks here: (block, Django's
#: Atomic for the entry, the entries before), innermost first.
_Entries: TypeAlias = "tuple[_RoutedAtomic, transaction.Atomic, _Entries] | None"
_ENTRIES: ContextVar[_Entries] = ContextVar("dynroute_atomic", default=None)


@overload
def atomic(using: _C) -> _C: ...


@overload
def atomic(
    using: str | None = None,
    savepoint: bool = True,  # noqa: FBT001, FBT002 - Django's signature
    durable: bool = False,  # noqa: FBT001, FBT002
) -> transaction.Atomic: ...


def atomic(
    using: str | Callable[..., Any] | None = None,
    savepoint: bool = True,  # noqa: FBT001, FBT002 - Django's signature
    durable: bool = False,  # noqa: FBT001, FBT002
) -> transaction.Atomic | Callable[..., Any]:
    """Django's ``transaction.atomic``, on the database the block sends writes to.

    Everything is as in Django (a context manager and a decorator, with or without
    parentheses; nesting makes savepoints; ``durable=True`` refuses to nest), except
    what ``using=None`` means: the write alias of the enclosing ``in_database``
    block, resolved each time the block or the decorated function is entered;
    ``"default"`` outside every block or where no block routes writes. ::

        with in_database("archive", write=True), dynroute.atomic():
            Order.objects.create(...)    # rolled back in "archive" on an exception

    Raises:
        UsageError: On entry with ``using=None``, inside a custom policy's block:
            the policy decides writes per model, so name the database.
    """
    if callable(using):
        # Bare decorator: @atomic; "using" is the function, the rest are defaults.
        return _RoutedAtomic(None, True, False)(using)  # noqa: FBT003 - Django's signature
    return _RoutedAtomic(using, savepoint, durable)


def on_commit(func: Callable[[], object], using: str | None = None, robust: bool = False) -> None:  # noqa: FBT001, FBT002 - Django's signature
    """Django's ``transaction.on_commit``, on the database the block sends writes to.

    ``func`` runs when the transaction of that database commits (at once if none is
    open there), and not at all if it rolls back; with ``robust=True`` an exception
    from ``func`` is logged instead of raised. ``using=None`` means what it means for
    :func:`atomic`.

    Raises:
        UsageError: ``using=None`` inside a custom policy's block.
    """
    if using is None:
        using = write_alias("on_commit")
    transaction.on_commit(func, using=using, robust=robust)
