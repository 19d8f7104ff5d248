"""dynroute.testing: runtime configurations inside Django's and pytest-django's tests."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import unittest
from pathlib import Path
from typing import ClassVar

import django
import pytest
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import SimpleTestCase
from django.test.testcases import DatabaseOperationForbidden

from dynroute import in_database
from dynroute.runtime import _registry as _runtime
from dynroute.runtime import active_aliases
from dynroute.testing import RuntimeDatabasesMixin, guarding_test_case
from tests.helpers import WatchedLock, wait_until
from tests.runtime import sessions
from tests.testapp.models import Item

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_without_the_fixture_django_5_1_refuses_runtime_connections(runtime_database):
    """The guard this module exists for: without it, Django 5.1+ refuses the alias."""
    if django.VERSION >= (5, 1):
        with pytest.raises(DatabaseOperationForbidden), in_database(runtime_database):
            pytest.fail("the body must not run")
    else:
        with in_database(runtime_database):
            assert Item.objects.count() == 0
    assert not active_aliases()


@pytest.mark.django_db
def test_with_the_fixture_the_alias_is_allowed_while_a_block_is_active(
    runtime_database, dynroute_runtime_databases
):
    """The fixture adds the alias to the running test case's databases, then removes it."""
    with in_database(runtime_database) as route:
        assert Item.objects.count() == 0
        test_case = guarding_test_case()
        if django.VERSION >= (5, 1):
            assert test_case is not None
            assert route.alias in test_case.databases
    if test_case is not None:
        assert route.alias not in test_case.databases


@pytest.mark.django_db(transaction=True)
def test_the_fixture_works_in_transactional_tests(runtime, dynroute_runtime_databases):
    """transaction=True tests (TransactionTestCase underneath) work the same."""
    with in_database(runtime, write=True):
        Item.objects.create(name="t")
        assert Item.objects.count() == 1


def run_django_tests(label: str) -> str:
    """``python -m django test label`` in a fresh process; its output, which must say OK."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DYNROUTE_TEST_NAME_SUFFIX": f"_runner{os.getpid()}",  # apart from this run's
        "DYNROUTE_TEST_STANDBY": "0",  # no standby runs for it
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "django", "test", label, "-v", "2", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "OK" in output
    return output


def test_django_test_runner_with_the_mixin():
    """``python -m django test`` runs TestCase/TransactionTestCase classes using the mixin."""
    assert "Ran 5 tests" in run_django_tests("tests.django_runner.tenants")


def test_django_test_runner_with_a_runtime_configuration_registered():
    """A configuration registered as the runner sets up databases: ``__all__`` classes work.

    It gets no test database (it is a mirror of itself to the runner), a TestCase's
    transaction on it is rolled back, and a TransactionTestCase never flushes it.
    """
    output = run_django_tests("tests.django_runner.registered")
    assert "Ran 4 tests" in output
    assert "Creating test database for alias 'dynroute_" not in output


@pytest.mark.usefixtures("dynroute_runtime_databases")
def test_a_block_never_connects_before_the_test_case_allows_its_alias(
    runtime_database, monkeypatch
):
    """No thread's block connects to an alias before the test case has allowed it.

    A second thread enters a block on the same configuration just after the first
    one counted its entry and before it tells the test case about the alias: it must
    wait until that is done, or (Django 5.1+) the guard refuses its connection.
    """
    happened: list[str] = []
    errors: list[BaseException] = []

    def second_block() -> None:
        try:
            with in_database(runtime_database):
                happened.append("second block entered")
                Item.objects.exists()
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    second = threading.Thread(target=second_block)
    lock = WatchedLock()
    notify = _runtime._notify

    def notify_late(alias: str, *, active: bool) -> None:
        if active and not happened:
            second.start()
            # Its chance to get in too early: it either waits for the lock (right)
            # or gets past it and runs its block to the end (the race).
            wait_until(
                lambda: lock.contended.is_set() or not second.is_alive(),
                "the second block to wait for the registry lock or to finish",
            )
            happened.append("told")
        notify(alias, active=active)

    monkeypatch.setattr(_runtime, "_lock", lock)
    monkeypatch.setattr(_runtime, "_notify", notify_late)
    with in_database(runtime_database):
        Item.objects.exists()
        second.join()
    assert errors == []
    assert happened == ["told", "second block entered"]


@pytest.mark.parametrize("how", ["a closure over a function", "a bound method", "a partial"])
def test_no_test_case_is_found_behind_another_librarys_patch(monkeypatch, how):
    """guarding_test_case() returns None when something else patched ensure_connection.

    pytest-django's blocker, django-read-only and others wrap it too, with a bound
    method, a closure over the function they wrap, or any callable.
    """
    real = BaseDatabaseWrapper.ensure_connection

    class Blocker:
        def ensure_connection(self, wrapper):
            return real(wrapper)

    def wrap(function):
        def ensure_connection(self):
            return function(self)

        return ensure_connection

    patched = {
        "a closure over a function": wrap(real),
        "a bound method": Blocker().ensure_connection,
        "a partial": functools.partial(real),  # looked up, never called here
    }[how]
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", patched)
    assert guarding_test_case() is None


def test_the_mixin_allows_runtime_blocks_and_closes_kept_connections_when_the_class_ends(
    runtime_database, django_db_blocker
):
    """A Django test case with RuntimeDatabasesMixin, run here by unittest.

    Inside: a block on a runtime configuration is allowed (its alias joins the class's
    databases while the block is active). After the class: the connection kept for
    reuse is closed and its alias unregistered.
    """
    reusing = {**runtime_database, "CONN_MAX_AGE": 60}
    seen: list[object] = []

    class TenantTests(RuntimeDatabasesMixin, SimpleTestCase):
        databases: ClassVar[set[str]] = set()

        def test_a_block_on_a_runtime_configuration(self) -> None:
            with in_database(reusing) as route:
                seen.append(Item.objects.count())
                seen.append(route.alias in type(self).databases or guarding_test_case() is None)
            seen.append(route.alias in type(self).databases)
            seen.append(active_aliases() == {route.alias})  # kept for the next block

    result = unittest.TestResult()
    with django_db_blocker.unblock():
        unittest.defaultTestLoader.loadTestsFromTestCase(TenantTests).run(result)
    assert result.errors == []
    assert result.failures == []
    assert result.testsRun == 1
    assert seen == [0, True, False, True]
    assert not active_aliases()
    assert sessions(reusing, expected=0) == 0
