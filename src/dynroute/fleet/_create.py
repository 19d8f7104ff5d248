"""Creating a database of the directory on its server (``manage.py dynroute create``).

The directory gives the new name's target (settings that point at a database that
does not exist yet); the database is created through a connection to the same server
with the same credentials: on PostgreSQL to its ``postgres`` database, with
``CREATE DATABASE ... TEMPLATE`` when a template is given; on MariaDB and MySQL
without a database. SQLite creates the file on the first connection. Nothing is
added to settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import connections
from django.db.utils import load_backend

from dynroute.core import DatabaseConfiguration
from dynroute.exceptions import ConfigurationError, DynrouteError
from dynroute.fleet._on import secrets_masked
from dynroute.routing import in_database
from dynroute.tenants import Directory, current_directory

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["create_database"]


def create_database(
    name: str, *, template: str | None = None, entries: Directory | None = None
) -> str:
    """Create the database that ``name`` names in the directory; say what was done.

    Raises:
        ConfigurationError: A template on another engine than PostgreSQL.
        DynrouteError: The server refused (the database exists, no right to create):
            the message has the target's secrets masked.
    """
    target = (entries or current_directory()).target(name)
    if isinstance(target, DatabaseConfiguration):
        given: Mapping[str, Any] = target.settings
    else:
        given = cast("Mapping[str, Any]", settings.DATABASES[target.alias])
    engine = str(given["ENGINE"])
    vendor = load_backend(engine).DatabaseWrapper.vendor
    database = str(given["NAME"])
    if template is not None and vendor != "postgresql":
        msg = f"--template is for PostgreSQL databases; {name!r} is on {vendor}."
        raise ConfigurationError(msg)
    if vendor == "sqlite":
        return f"{name}: SQLite creates the file on first use."
    server = {**given, "NAME": "postgres" if vendor == "postgresql" else ""}
    with in_database(server) as route:  # registers the alias; the cursor is used directly
        connection = connections[route.alias]
        quote = connection.ops.quote_name
        statement = f"CREATE DATABASE {quote(database)}"
        if template is not None:
            statement += f" TEMPLATE {quote(template)}"
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        except Exception as error:  # noqa: BLE001 - drivers raise anything; re-raised, masked
            masked = secrets_masked(f"{type(error).__name__}: {error}", target)
            msg = f"{name}: CREATE DATABASE failed: {masked}"
            raise DynrouteError(msg) from None
        finally:
            connection.close()
    copied = f" from {template}" if template else ""
    return f"{name}: created database {database!r}{copied}."
