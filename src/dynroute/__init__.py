"""dynroute: route every Django ORM query in a block or a function to the database you name.

::

    from dynroute import in_database

    with in_database("replica"):
        report = build_report(Order.objects.filter(paid=True))

Add ``"dynroute.DynamicDbRouter"`` to ``DATABASE_ROUTERS``. See the README for the
routing rules, runtime configurations and the migration from
django-dynamic-db-router.

This module only re-exports: the code lives in rooms by capability (``core``,
``routing``, ``runtime``, ``writes``, ``replicas``, ``tenants``, ``observe``, ``http``),
mapped in docs/how-it-works.md.
"""

from __future__ import annotations

from dynroute.core import (
    DatabaseAlias,
    DatabaseConfiguration,
    DatabaseTarget,
    ReadOnly,
    ReadWrite,
    RoutingPolicy,
    WriteOnly,
)
from dynroute.exceptions import DynrouteError
from dynroute.fleet import DatabaseResult, aeach_database, each_database
from dynroute.replicas import PrimaryReplica, UsePrimary, use_primary
from dynroute.routing import (
    DynamicDbRouter,
    InDatabase,
    Route,
    current_alias,
    current_route,
    in_database,
)
from dynroute.runtime import close_idle_connections
from dynroute.tenants import Unlocked, database_named, unlocked
from dynroute.writes import PreventWrites, atomic, on_commit, prevent_writes

__all__ = [
    "DatabaseAlias",
    "DatabaseConfiguration",
    "DatabaseResult",
    "DatabaseTarget",
    "DynamicDbRouter",
    "DynrouteError",
    "InDatabase",
    "PreventWrites",
    "PrimaryReplica",
    "ReadOnly",
    "ReadWrite",
    "Route",
    "RoutingPolicy",
    "Unlocked",
    "UsePrimary",
    "WriteOnly",
    "aeach_database",
    "atomic",
    "close_idle_connections",
    "current_alias",
    "current_route",
    "database_named",
    "each_database",
    "in_database",
    "on_commit",
    "prevent_writes",
    "unlocked",
    "use_primary",
]
