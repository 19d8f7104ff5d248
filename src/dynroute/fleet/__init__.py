"""Across databases: the directory's databases migrated, checked, worked on together.

- ``_pool``: the scheduler (bounded overall and per server, stoppable), threads and
  worker processes;
- ``_on``: work on one database by name: its block, its connection, its errors;
- ``_migrations``: one database's applied migrations (one query), the graph built once,
  applying under a per-database lock;
- ``_fleet``: ``check`` and ``migrate`` over many databases (``manage.py dynroute``);
- ``_each``: ``each_database()`` and ``aeach_database()``, fan-out in Python.
"""

from __future__ import annotations

from dynroute.fleet._create import create_database
from dynroute.fleet._each import DatabaseResult, aeach_database, each_database
from dynroute.fleet._fleet import (
    Bounds,
    check,
    migrate,
    migrate_one,
    run_each,
    servers,
)
from dynroute.fleet._migrations import check_conflicts
from dynroute.fleet._on import on_database, secrets_masked
from dynroute.fleet._pool import (
    Outcome,
    Processes,
    Threads,
    schedule,
    tell_finished,
    tell_started,
)

__all__ = [
    "Bounds",
    "DatabaseResult",
    "Outcome",
    "Processes",
    "Threads",
    "aeach_database",
    "check",
    "check_conflicts",
    "create_database",
    "each_database",
    "migrate",
    "migrate_one",
    "on_database",
    "run_each",
    "schedule",
    "secrets_masked",
    "servers",
    "tell_finished",
    "tell_started",
]
