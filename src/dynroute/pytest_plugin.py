"""pytest plugin: the ``dynroute_runtime_databases`` fixture for pytest-django tests.

pytest loads it by itself when dynroute is installed (entry point ``pytest11``). Use it
in a test that enters blocks on runtime database configurations::

    pytestmark = pytest.mark.usefixtures("dynroute_runtime_databases")

See :mod:`dynroute.testing` for what it does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ["dynroute_runtime_databases"]


@pytest.fixture
def dynroute_runtime_databases(db: None) -> Generator[None, None, None]:  # noqa: ARG001 - requesting db sets up pytest-django's test case first
    """Let the test use runtime database configurations (needs database access)."""
    # Imported here: pytest loads plugins before Django is configured.
    from dynroute import runtime  # noqa: PLC0415 - see above
    from dynroute.testing import allow_runtime_databases, guarding_test_case  # noqa: PLC0415

    test_case = guarding_test_case()
    if test_case is None:
        # No guard (Django < 5.1): only the clean-up is needed.
        try:
            yield
        finally:
            runtime.close_idle_connections()
        return
    with allow_runtime_databases(test_case):
        yield
