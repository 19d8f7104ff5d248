"""dynroute: route every Django ORM query in a block or a function to the database you name.

::

    from dynroute import in_database

    with in_database("replica"):
        report = build_report(Order.objects.filter(paid=True))

Add ``"dynroute.DynamicDbRouter"`` to ``DATABASE_ROUTERS``. See the README for the
routing rules, runtime configurations and the migration from
django-dynamic-db-router.
"""

from __future__ import annotations

from dynroute._block import InDatabase, Route, in_database
from dynroute._current import current_alias, current_route
from dynroute._locks import Unlocked, unlocked
from dynroute._policies import ReadOnly, ReadWrite, RoutingPolicy, WriteOnly
from dynroute._replicas import PrimaryReplica, UsePrimary, use_primary
from dynroute._router import DynamicDbRouter
from dynroute._runtime import close_idle_connections
from dynroute._targets import DatabaseAlias, DatabaseConfiguration, DatabaseTarget
from dynroute._transactions import atomic, on_commit
from dynroute._writes import PreventWrites, prevent_writes
from dynroute.exceptions import DynrouteError

__all__ = [
    "DatabaseAlias",
    "DatabaseConfiguration",
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
    "atomic",
    "close_idle_connections",
    "current_alias",
    "current_route",
    "in_database",
    "on_commit",
    "prevent_writes",
    "unlocked",
    "use_primary",
]
