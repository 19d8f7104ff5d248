"""Prevention scopes: where writes are refused, per thread and task.

``prevent_writes()`` scopes, and blocks made with ``prevent_writes=True``, push a scope
here: a ContextVar holding an immutable linked list, like the route stack, so it is per
thread and per task and is carried into ``sync_to_async``. The router refuses an ORM
write inside one (:func:`~dynroute.writes._prevent.refuse_write`), and the write hook a
statement that may write (:mod:`dynroute.writes._hook`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final, TypeAlias

from dynroute.exceptions import RouteStateError

__all__ = ["ADVICE", "PREFIX", "get_scope", "leave_scope", "push_scope"]

#: The prevention scopes active here, innermost first: ``(enabled, owner, parent)``.
_Scope: TypeAlias = "tuple[bool, object, _Scope | None]"
_SCOPES: ContextVar[_Scope | None] = ContextVar("dynroute_prevent_writes", default=None)
#: The innermost scope here, or ``None``; refusing is ``scope[0]``.
get_scope = _SCOPES.get

#: How a refusal starts and ends, whichever door the write took.
PREFIX: Final = "Writes are prevented here (prevent_writes()): refused "
ADVICE: Final = (
    ". Write outside the prevent_writes() block, or inside prevent_writes(False) to allow "
    "it on purpose."
)


def push_scope(owner: object, *, enabled: bool) -> None:
    """Refuse writes (or allow them again) here until ``owner`` leaves.

    Callers install the write hook and throw the switch first (see
    :func:`~dynroute.writes._prevent.enter_scope`).
    """
    _SCOPES.set((enabled, owner, get_scope()))


def leave_scope(owner: object, *, missing_ok: bool = False) -> None:
    """End the scope ``owner`` entered last here, and any entered inside it since.

    Raises:
        RouteStateError: ``owner`` has no scope here (unless ``missing_ok``): it was
            entered in another thread or task, or left twice.
    """
    scope = get_scope()
    while scope is not None and scope[1] is not owner:
        scope = scope[2]
    if scope is None:
        if missing_ok:
            return
        msg = (
            f"{owner!r} was left without being active here: a block must be left in the "
            "thread or task that entered it, once per entry, innermost first."
        )
        raise RouteStateError(msg)
    _SCOPES.set(scope[2])
