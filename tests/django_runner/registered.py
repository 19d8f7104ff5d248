"""Django's test runner while a runtime configuration is registered, with ``__all__`` classes.

Not collected by pytest: ``tests/test_testing.py`` runs it with ``python -m django test
tests.django_runner.registered``. Importing it (which the runner does before it sets up
the test databases) leaves a runtime configuration registered and idle, as a project
whose code entered a reuse block at import would. The runner must set up its
databases without it, and no test may flush or keep what the runtime database holds.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

from django.db import connections
from django.test import TestCase, TransactionTestCase

from dynroute import close_idle_connections, in_database
from dynroute.runtime import active_aliases
from tests.testapp.models import Item

_FOLDER = Path(tempfile.mkdtemp(prefix="dynroute-registered-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
atexit.register(close_idle_connections)

#: A real SQLite database outside settings, with the test app's table and one row.
RUNTIME = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": str(_FOLDER / "runtime.sqlite3"),
    "CONN_MAX_AGE": 60,  # reuse: the alias stays registered after the block
}
with sqlite3.connect(RUNTIME["NAME"]) as _connection:
    _connection.execute(
        f"CREATE TABLE {Item._meta.db_table} (id INTEGER PRIMARY KEY, name VARCHAR(50))"
    )
    _connection.execute(f"INSERT INTO {Item._meta.db_table} (name) VALUES ('kept')")  # noqa: S608 - a fixed name
with in_database(RUNTIME) as _route:
    ALIAS = _route.alias
assert ALIAS in active_aliases(), "the configuration should stay registered (reuse mode)"


def runtime_names() -> list[str]:
    """The rows of the runtime database, read outside Django."""
    with sqlite3.connect(RUNTIME["NAME"]) as connection:
        rows = connection.execute(f"SELECT name FROM {Item._meta.db_table}")  # noqa: S608 - a fixed name
        return [name for (name,) in rows]


class AllDatabasesTests(TestCase):
    """A TestCase on every database: the registered runtime alias among them."""

    databases = "__all__"

    def test_the_runtime_alias_is_a_database_of_the_class(self) -> None:
        self.assertIn(ALIAS, connections)
        with in_database(RUNTIME):
            self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["kept"])

    def test_the_test_databases_are_the_test_ones(self) -> None:
        Item.objects.create(name="in the test database")
        default = connections["default"].settings_dict
        self.assertEqual(default["NAME"], default["TEST"]["NAME"])
        self.assertEqual(Item.objects.count(), 1)


class AllDatabasesTransactionTests(TransactionTestCase):
    """A TransactionTestCase on every database: its flush never reaches the runtime one."""

    databases = "__all__"

    def test_1_a_test_runs(self) -> None:
        Item.objects.create(name="flushed after the test")

    def test_2_the_runtime_database_was_not_flushed(self) -> None:
        self.assertEqual(runtime_names(), ["kept"])
