"""``prevent_writes()``: refuse every write of a thread or task, before it reaches a server.

Two checks, one per door a write can take:

- **The router**: Django asks ``db_for_write`` before every ORM write (``save``,
  ``create``, ``get_or_create``, ``update``, ``delete``, ``bulk_create``,
  ``select_for_update``...). dynroute's router refuses there, before any SQL.
- **The connection**: raw SQL, migrations and writes sent with ``.using()`` reach a
  cursor without asking the router. A hook at the head of every connection's
  ``execute_wrappers`` lets statements through only if :mod:`dynroute._sql` classifies
  them as reads.

The scope lives in a ContextVar, like the route stack: per thread and per task, carried
into ``sync_to_async``. The hook is installed on the first use of ``prevent_writes()``
or of a PrimaryReplica block (whose pinning it tells of writes that skip the router),
on every connection that exists by then in any thread (found by the garbage
collector's list of objects: a connection opened before dynroute was imported has no
other trace) and, through Django's ``connection_created`` signal, on every connection
opened after. Inserted first, not entered with ``execute_wrapper()``, it is never
popped by a user's own ``execute_wrapper()`` block, whatever order those end in
(django-read-only issue #180). Until the first use, no hook runs; after it, the hook
costs two ContextVar lookups per statement while nothing is prevented and no
PrimaryReplica block is active.
"""

from __future__ import annotations

import gc
import threading
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    NoReturn,
    TypeAlias,
    cast,
    final,
)

from django.db import DEFAULT_DB_ALIAS
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from dynroute._decorating import SyncScope
from dynroute._replicas import get_written, note_statement
from dynroute._sql import refused_part, statement_text
from dynroute.exceptions import RouteStateError, UsageError, WriteForbiddenError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from django.db.models import Model

__all__ = [
    "PreventWrites",
    "enter_scope",
    "get_scope",
    "install_everywhere",
    "leave_scope",
    "prevent_writes",
    "refuse_write",
]


#: The prevention scopes active here, innermost first: ``(enabled, owner, parent)``.
_Scope: TypeAlias = "tuple[bool, object, _Scope | None]"
_SCOPES: ContextVar[_Scope | None] = ContextVar("dynroute_prevent_writes", default=None)
get_scope = _SCOPES.get

#: Whether a scope was ever entered in this process. Until then the router does not
#: look for one (a ContextVar read on every write). Never set back: a scope may live
#: on in a task or context copied while it was active, after its owner has left.
scopes_entered = False


def enter_scope(owner: object, *, enabled: bool) -> None:
    """Refuse writes (or allow them again) here until ``owner`` leaves."""
    global scopes_entered  # noqa: PLW0603 - set once, read by the router
    install_everywhere()
    scopes_entered = True
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


@final
class PreventWrites(SyncScope):
    """A scope in which writes are refused, or allowed again; made by :func:`prevent_writes`.

    Use it as ``with``, ``async with``, or a decorator of sync and async functions.
    """

    __slots__ = ("_enabled",)
    _decorates = ("prevent_writes()", "write prevention")

    def __init__(self, enabled: bool) -> None:  # noqa: FBT001 - see prevent_writes
        """Refuse writes (``enabled=True``) or allow them again. Use :func:`prevent_writes`."""
        self._enabled = enabled

    def __repr__(self) -> str:
        """Show the call that made it."""
        return "prevent_writes()" if self._enabled else "prevent_writes(False)"

    def __enter__(self) -> None:
        """Refuse (or allow again) the writes of this thread or task until the block exits."""
        enter_scope(self, enabled=self._enabled)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Restore what was in force before the block."""
        leave_scope(self)


def prevent_writes(enabled: bool = True) -> PreventWrites:  # noqa: FBT001, FBT002 - reads as prevent_writes(False)
    """Refuse every write of this thread or task, on every database, until the block exits.

    A context manager, an async context manager and a decorator of sync and async
    functions; scopes nest, and ``prevent_writes(False)`` allows writes again inside
    one. In its scope a write raises :class:`~dynroute.exceptions.WriteForbiddenError`
    before it reaches the server: an ORM write where Django asks the router for a
    write database, before any SQL; any statement sent through a Django connection
    unless it only reads (see the README for the statements allowed). Other threads
    and tasks are not affected. ::

        with prevent_writes():
            report = build_report()     # a write anywhere inside raises

    Raises:
        UsageError: ``enabled`` is not a ``bool``.
    """
    given: object = enabled  # callers without a type checker pass anything
    if type(given) is not bool:
        msg = f"prevent_writes(enabled) must be True or False, got {type(given).__name__}."
        raise UsageError(msg)
    return PreventWrites(enabled)


_PREFIX: Final = "Writes are prevented here (prevent_writes()): refused "
_ADVICE: Final = (
    ". Write outside the prevent_writes() block, or inside prevent_writes(False) to allow "
    "it on purpose."
)


def refuse_write(model: type[Model], hints: dict[str, Any], alias: str | None) -> NoReturn:
    """Raise for an ORM write, where the router is asked for the database to write to.

    Args:
        model: The model being written.
        hints: Django's router hints (``instance``).
        alias: Where the routers so far would send it, or ``None``.

    Raises:
        WriteForbiddenError: Always.
    """
    if alias is None:
        instance = hints.get("instance")
        # Django's own fallback: the database the object was read from, else default.
        alias = instance._state.db if instance is not None else None  # noqa: SLF001 - Django's model API
    label = model._meta.label  # noqa: SLF001 - Django's model API
    msg = (
        f"{_PREFIX}a write of {label} to database {alias or DEFAULT_DB_ALIAS!r}, "
        f"before any SQL{_ADVICE}"
    )
    raise WriteForbiddenError(msg)


def _hook(
    execute: Callable[[Any, Any, bool, dict[str, Any]], Any],
    sql: Any,  # noqa: ANN401 - a str, or a driver's composed statement
    params: Any,  # noqa: ANN401 - the driver's parameters, never shown
    many: bool,  # noqa: FBT001 - Django's execute wrapper signature
    context: dict[str, Any],
) -> Any:  # noqa: ANN401 - whatever the cursor returns
    scope = get_scope()
    if scope is not None and scope[0]:
        _check_statement(sql, context["connection"])
    written = get_written()
    if written is not None:
        note_statement(sql, context["connection"], written)
    return execute(sql, params, many, context)


def _check_statement(sql: object, connection: BaseDatabaseWrapper) -> None:
    text = statement_text(sql, connection)
    if text is None:
        part: str | None = "(a statement that is not a string)"
    else:
        part = refused_part(text, connection.vendor)
    if part is not None:
        msg = f"{_PREFIX}a statement on database {connection.alias!r}: {part!r}{_ADVICE}"
        raise WriteForbiddenError(msg)


def install(connection: BaseDatabaseWrapper, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    """Put the hook first in ``connection``'s execute wrappers, once."""
    wrappers = connection.execute_wrappers
    if _hook not in wrappers:
        wrappers.insert(0, _hook)


_installed = False
_INSTALLING = threading.Lock()


def install_everywhere() -> None:
    """Install the hook on every connection, now and from now on (once per process)."""
    global _installed  # noqa: PLW0603 - done once
    if _installed:
        return
    with _INSTALLING:
        if not _installed:
            connection_created.connect(install)
            for found in gc.get_objects():
                # type(), not isinstance(): isinstance() reads __class__, which makes
                # lazy objects (Django's LazyObject, connection proxies) set themselves up.
                if issubclass(type(found), BaseDatabaseWrapper):
                    wrapper = cast("BaseDatabaseWrapper", found)
                    install(wrapper)
            _installed = True
