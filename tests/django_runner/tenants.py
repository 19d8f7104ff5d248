"""Django test cases using runtime configurations, run by Django's own test runner.

Not collected by pytest (no ``test_`` prefix): ``tests/test_testing.py`` runs them with
``python -m django test tests.django_runner.tenants``.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import django
from django.test import TestCase, TransactionTestCase
from django.test.testcases import DatabaseOperationForbidden

from dynroute import in_database
from dynroute.runtime import active_aliases
from dynroute.testing import RuntimeDatabasesMixin
from tests.runtime import created_database, names
from tests.testapp.models import Item


class WithRuntimeDatabase(RuntimeDatabasesMixin):
    """Creates a runtime database for the class (the mixin is the line under test)."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        stack = ExitStack()
        cls.addClassCleanup(stack.close)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cls.runtime = stack.enter_context(created_database(folder))


class RuntimeDatabaseMixinTests(WithRuntimeDatabase, TestCase):
    """A TestCase that routes to a runtime configuration."""

    databases = {"default", "other"}

    def test_reads_and_writes_go_to_the_runtime_database(self) -> None:
        with in_database(self.runtime, write=True):
            Item.objects.create(name="from TestCase")
            self.assertEqual(Item.objects.count(), 1)
        self.assertEqual(names(self.runtime), ["from TestCase"])
        self.assertFalse(Item.objects.exists())

    def test_the_alias_is_allowed_only_while_a_block_is_active(self) -> None:
        with in_database(self.runtime) as route:
            self.assertIn(route.alias, type(self).databases)
        self.assertNotIn(route.alias, type(self).databases)
        self.assertFalse(active_aliases())


class RuntimeDatabaseTransactionTests(WithRuntimeDatabase, TransactionTestCase):
    """A TransactionTestCase: flushes must never reach the runtime database."""

    databases = {"default"}

    def test_1_write(self) -> None:
        with in_database({**self.runtime, "CONN_MAX_AGE": 60}, write=True):
            Item.objects.create(name="kept")

    def test_2_still_there_after_the_flush(self) -> None:
        self.assertEqual(names(self.runtime), ["kept"])


class WithoutTheMixinTests(TestCase):
    """Without the mixin, Django 5.1+ refuses the runtime alias; 4.2 has no guard."""

    databases = {"default"}

    def test_django_refuses_or_allows_as_documented(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            configuration = {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{folder}/x.db"}
            if django.VERSION >= (5, 1):
                with self.assertRaises(DatabaseOperationForbidden), in_database(configuration):
                    pass
            else:
                with in_database(configuration):
                    pass
        self.assertFalse(active_aliases())
