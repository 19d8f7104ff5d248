"""Tenants: the directory of databases (``DYNROUTE_DATABASES``), request locks, ``unlocked()``.

The request middleware that chooses each request's database is in ``dynroute.http``
(``dynroute.middleware.DatabaseMiddleware``): it enters a block, which this room cannot
import. Work across the directory's databases is in ``dynroute.fleet``.
"""

from __future__ import annotations

from dynroute.tenants._directory import SETTING as DIRECTORY_SETTING
from dynroute.tenants._directory import Directory, database_named, server_of
from dynroute.tenants._directory import current as current_directory
from dynroute.tenants._directory import load as load_directory
from dynroute.tenants._directory import reloaded as reloaded_directory
from dynroute.tenants._locks import Unlocked, check, lock, release, unlocked

__all__ = [
    "DIRECTORY_SETTING",
    "Directory",
    "Unlocked",
    "check",
    "current_directory",
    "database_named",
    "load_directory",
    "lock",
    "release",
    "reloaded_directory",
    "server_of",
    "unlocked",
]
