"""Drop-in replacement for django-dynamic-db-router, backed by dynroute.

Code and settings written for django-dynamic-db-router keep working unchanged::

    DATABASE_ROUTERS = ["dynamic_db_router.DynamicDbRouter"]

    from dynamic_db_router import in_database

    with in_database("external", write=True):
        ...

The differences from django-dynamic-db-router 0.3.0 are listed in dynroute's README
("Migrating from django-dynamic-db-router"). New code should import from ``dynroute``.
"""

from __future__ import annotations

from dynamic_db_router.router import DynamicDbRouter, in_database

__all__ = ["DynamicDbRouter", "in_database"]
