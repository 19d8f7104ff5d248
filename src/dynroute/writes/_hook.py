"""The write hook: first in every connection's ``execute_wrappers``, it sees every statement.

Raw SQL, migrations and writes sent with ``.using()`` reach a cursor without asking a
router. The hook sees them all, for two rooms:

- inside a prevention scope, it lets a statement through only if the core's SQL
  classifier says it only reads (``WriteForbiddenError`` otherwise);
- inside a ``PrimaryReplica`` block, it tells the replicas room of each statement,
  which pins the reads that follow a write to the primary
  (:func:`dynroute.replicas.note_statement`).

It is installed on the first use of ``prevent_writes()`` or of a PrimaryReplica block,
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
from typing import TYPE_CHECKING, Any, cast

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from dynroute import _switches
from dynroute.core import refused_part, statement_text
from dynroute.exceptions import WriteForbiddenError
from dynroute.replicas import get_pins, note_statement
from dynroute.writes._scopes import ADVICE, PREFIX, get_scope

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["install", "install_everywhere", "write_hook"]


def write_hook(
    execute: Callable[[Any, Any, bool, dict[str, Any]], Any],
    sql: Any,  # noqa: ANN401 - a str, or a driver's composed statement
    params: Any,  # noqa: ANN401 - the driver's parameters, never shown
    many: bool,  # noqa: FBT001 - Django's execute wrapper signature
    context: dict[str, Any],
) -> Any:  # noqa: ANN401 - whatever the cursor returns
    """Refuse a statement that may write inside a prevention scope; tell pins of it."""
    scope = get_scope()
    if scope is not None and scope[0]:
        _check_statement(sql, context["connection"])
    written = get_pins()
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
        msg = f"{PREFIX}a statement on database {connection.alias!r}: {part!r}{ADVICE}"
        raise WriteForbiddenError(msg)


def install(connection: BaseDatabaseWrapper, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    """Put the hook first in ``connection``'s execute wrappers, once."""
    wrappers = connection.execute_wrappers
    if write_hook not in wrappers:
        wrappers.insert(0, write_hook)


_INSTALLING = threading.Lock()


def install_everywhere() -> None:
    """Install the hook on every connection, now and from now on (once per process)."""
    if _switches.hook_installed:
        return
    with _INSTALLING:
        if not _switches.hook_installed:
            connection_created.connect(install)
            for found in gc.get_objects():
                # type(), not isinstance(): isinstance() reads __class__, which makes
                # lazy objects (Django's LazyObject, connection proxies) set themselves up.
                if issubclass(type(found), BaseDatabaseWrapper):
                    wrapper = cast("BaseDatabaseWrapper", found)
                    install(wrapper)
            _switches.install_hook()
