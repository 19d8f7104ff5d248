"""Use runtime database configurations inside Django's and pytest-django's tests.

Since Django 5.1, a test case refuses connections to any alias that is registered but
not in its ``databases``, and a runtime configuration's alias is registered only when
a block on it is entered. One line lets a test case allow them:

- Django's test runner: put :class:`RuntimeDatabasesMixin` first among the bases::

      class TenantTests(RuntimeDatabasesMixin, TestCase): ...

- pytest-django: request the ``dynroute_runtime_databases`` fixture (from
  :mod:`dynroute.pytest_plugin`, which pytest loads by itself)::

      pytestmark = pytest.mark.usefixtures("dynroute_runtime_databases")

While a block on a runtime configuration is active, its alias is added to the running
test case's ``databases``, and removed when the block leaves, so Django's per-test
flush and transactions never touch it. Runtime databases are real databases: tests
are responsible for what they write there. Connections kept for reuse are closed when
the test case (or, with pytest, the test) ends.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import SimpleTestCase

from dynroute import runtime

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["RuntimeDatabasesMixin", "allow_runtime_databases", "guarding_test_case"]


@contextmanager
def allow_runtime_databases(test_case: type[SimpleTestCase]) -> Generator[None, None, None]:
    """Let ``test_case`` use runtime configurations while this context is open.

    Args:
        test_case: The running test case class (its ``databases`` is extended while
            a block on a runtime configuration is active).

    Yields:
        Nothing; on exit, connections kept for reuse are closed.
    """

    def follow(alias: str, active: bool) -> None:  # noqa: FBT001 - the listener signature
        current = set(test_case.databases)
        if active:
            current.add(alias)
        else:
            current.discard(alias)
        test_case.databases = current

    runtime.add_listener(follow)
    try:
        yield
    finally:
        runtime.remove_listener(follow)
        runtime.close_idle_connections()


class RuntimeDatabasesMixin(SimpleTestCase):
    """Let a Django test case use runtime database configurations.

    Put it first among the bases::

        class TenantTests(RuntimeDatabasesMixin, TestCase): ...
    """

    @classmethod
    def setUpClass(cls) -> None:
        """Allow runtime aliases for the whole class, after Django's own set-up."""
        super().setUpClass()
        allowance = allow_runtime_databases(cls)
        allowance.__enter__()
        # Class cleanups run last in, first out: this runs before Django's own
        # cleanup, which would fail on an alias registered after set-up.
        cls.addClassCleanup(allowance.__exit__, None, None, None)


def guarding_test_case() -> type[SimpleTestCase] | None:
    """Return the test case whose connection guard is installed, if any.

    Django 5.1+ installs the guard by patching ``BaseDatabaseWrapper.ensure_connection``
    with a function that closes over the running test case class; pytest-django
    creates that class out of reach. Django 4.2 installs no such guard.
    """
    closure = getattr(BaseDatabaseWrapper.ensure_connection, "__closure__", None) or ()
    for cell in closure:
        value: Any = cell.cell_contents
        if isinstance(value, type) and issubclass(value, SimpleTestCase):
            return value
    return None
