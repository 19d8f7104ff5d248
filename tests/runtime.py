"""Real databases for runtime configurations, on the backend under test.

Each is created with the driver directly (outside Django, in autocommit), given the
test app's tables through a runtime block, and dropped at the end. Sessions are
counted outside Django too: the server's own view for PostgreSQL and MariaDB, the
process's open file descriptors for SQLite.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import connections

from dynroute import in_database
from tests import settings as test_settings
from tests.testapp.models import Item, MyModel

if TYPE_CHECKING:
    from collections.abc import Iterator

BACKEND = test_settings.BACKEND
SERVER = test_settings.DATABASES["default"]
_names = itertools.count(1)


def full_settings(name: str, folder: Path) -> dict[str, Any]:
    """A complete settings dict for the runtime database ``name``."""
    if BACKEND == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / f"{name}.sqlite3")}
    keys = ("ENGINE", "HOST", "PORT", "USER", "PASSWORD", "OPTIONS")
    return {**{key: SERVER[key] for key in keys if key in SERVER}, "NAME": name}


def minimal_settings(full: dict[str, Any]) -> dict[str, Any]:
    """Only ENGINE and NAME: servers are then reached on their local socket."""
    return {"ENGINE": full["ENGINE"], "NAME": full["NAME"]}


@contextlib.contextmanager
def driver(database: str | None) -> Iterator[Any]:
    """A DB-API connection in autocommit, outside Django (``None``: the server itself)."""
    if BACKEND == "sqlite":
        assert database is not None
        connection: Any = sqlite3.connect(database, isolation_level=None)
    elif BACKEND == "postgresql":
        import psycopg  # noqa: PLC0415 - only on this backend

        connection = psycopg.connect(
            host=SERVER["HOST"],
            port=int(SERVER["PORT"]),
            user=SERVER["USER"],
            password=SERVER["PASSWORD"],
            dbname=database or "postgres",
            autocommit=True,
        )
    else:
        import MySQLdb  # noqa: PLC0415

        extra = {"db": database} if database else {}
        connection = MySQLdb.connect(
            host=SERVER["HOST"],
            port=int(SERVER["PORT"]),
            user=SERVER["USER"],
            passwd=SERVER["PASSWORD"],
            **extra,
        )
        connection.autocommit(True)  # noqa: FBT003 - the driver's API
    try:
        yield connection
    finally:
        connection.close()


def query(database: str | None, sql: str, params: list[Any] | None = None) -> list[Any]:
    """Run one statement with the driver; return its rows (if any)."""
    with driver(database) as connection:
        cursor = connection.cursor()
        cursor.execute(sql, params or [])
        return list(cursor.fetchall()) if cursor.description else []


@contextlib.contextmanager
def created_database(folder: Path) -> Iterator[dict[str, Any]]:
    """Create a database with the test app's tables; yield its settings; drop it."""
    name = f"dynroute_rt_{os.getpid()}_{next(_names)}"
    settings = full_settings(name, folder)
    if BACKEND != "sqlite":
        query(None, f"CREATE DATABASE {name}")
    try:
        with (
            in_database(settings, write=True) as route,
            connections[route.alias].schema_editor() as editor,
        ):
            editor.create_model(Item)
            editor.create_model(MyModel)
        yield settings
    finally:
        if BACKEND == "postgresql":
            query(None, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        elif BACKEND == "mariadb":
            query(None, f"DROP DATABASE IF EXISTS {name}")


def sessions(settings: dict[str, Any], *, expected: int | None = None) -> int:
    """How many connections to the runtime database are open (other than ours).

    With ``expected``, wait up to three seconds for the count to reach it before
    returning it: servers list a session for a moment after its client closed it.
    """
    count = _sessions(settings)
    deadline = time.monotonic() + 3
    while expected is not None and count != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        count = _sessions(settings)
    return count


def _sessions(settings: dict[str, Any]) -> int:
    name = settings["NAME"]
    if BACKEND == "sqlite":
        target = Path(name).resolve()
        count = 0
        for fd in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                count += fd.readlink() == target
        return count
    if BACKEND == "postgresql":
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    else:
        sql = (
            "SELECT count(*) FROM information_schema.PROCESSLIST "
            "WHERE DB = %s AND ID <> CONNECTION_ID()"
        )
    ((count,),) = query(None, sql, [name])
    return int(count)


def names(settings: dict[str, Any]) -> list[str]:
    """The item names stored in the runtime database, read with the driver."""
    database = str(settings["NAME"])
    return [row[0] for row in query(database, "SELECT name FROM testapp_item ORDER BY name")]


def clear(settings: dict[str, Any]) -> None:
    """Empty the runtime database's tables, with the driver."""
    database = str(settings["NAME"])
    for table in ("testapp_item", "testapp_mymodel"):
        query(database, f"DELETE FROM {table}")  # noqa: S608 - fixed names


class FailingClose:
    """A DB-API connection whose close() fails (the real one is closed by the test)."""

    def __init__(self, real: object) -> None:
        self.real = real

    def close(self) -> None:
        msg = "the socket is gone"
        raise OSError(msg)
