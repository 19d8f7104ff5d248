"""Writes: refused, seen, and in transactions that follow the route.

``prevent_writes()`` refuses them, the write hook sees every statement, and
``atomic()`` and ``on_commit()`` work on the database writes go to.

- ``_prevent``: ``prevent_writes()`` and the router's refusal of an ORM write;
- ``_scopes``: the prevention scopes of each thread and task;
- ``_hook``: the execute hook on every connection (it also tells the replicas room of
  each statement, for pins);
- ``_transactions``: ``atomic()`` and ``on_commit()`` on the database writes go to.
"""

from __future__ import annotations

from dynroute.writes._hook import install, install_everywhere, write_hook
from dynroute.writes._prevent import PreventWrites, enter_scope, prevent_writes, refuse_write
from dynroute.writes._scopes import get_scope, leave_scope
from dynroute.writes._transactions import atomic, on_commit

__all__ = [
    "PreventWrites",
    "atomic",
    "enter_scope",
    "get_scope",
    "install",
    "install_everywhere",
    "leave_scope",
    "on_commit",
    "prevent_writes",
    "refuse_write",
    "write_hook",
]
