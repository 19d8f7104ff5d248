"""``prevent_writes()``: refuse every write of a thread or task, before it reaches a server.

Two checks, one per door a write can take:

- **The router**: Django asks ``db_for_write`` before every ORM write (``save``,
  ``create``, ``get_or_create``, ``update``, ``delete``, ``bulk_create``,
  ``select_for_update``...). dynroute's router refuses there, before any SQL
  (:func:`refuse_write`).
- **The connection**: raw SQL, migrations and writes sent with ``.using()`` reach a
  cursor without asking the router: the write hook (:mod:`dynroute.writes._hook`)
  refuses them there.

The scopes themselves are in :mod:`dynroute.writes._scopes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, final

from django.db import DEFAULT_DB_ALIAS

from dynroute import _switches
from dynroute.core import SyncScope
from dynroute.exceptions import UsageError, WriteForbiddenError
from dynroute.writes._hook import install_everywhere
from dynroute.writes._scopes import ADVICE, PREFIX, leave_scope, push_scope

if TYPE_CHECKING:
    from types import TracebackType

    from django.db.models import Model

__all__ = ["PreventWrites", "enter_scope", "prevent_writes", "refuse_write"]


def enter_scope(owner: object, *, enabled: bool) -> None:
    """Refuse writes (or allow them again) here until ``owner`` leaves.

    Installs the write hook first (once per process), and throws the switch that
    makes the router look for a scope on every write.
    """
    install_everywhere()
    if not _switches.scopes_entered:
        _switches.enter_scopes()
    push_scope(owner, enabled=enabled)


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
        f"{PREFIX}a write of {label} to database {alias or DEFAULT_DB_ALIAS!r}, "
        f"before any SQL{ADVICE}"
    )
    raise WriteForbiddenError(msg)
