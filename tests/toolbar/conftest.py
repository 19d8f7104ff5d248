"""The routing panel's tests run only under their own settings (tests/toolbar/settings.py).

The main suite's settings have no toolbar, and its environments may not have the
package: there, this folder is not collected. Run it with
``pytest tests/toolbar --ds=tests.toolbar.settings``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.toolbar.settings":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def tenant(runtime: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The tenant's settings, for the views (a SQLite file with the test tables)."""
    from tests.toolbar import urls  # noqa: PLC0415 - needs the toolbar's settings

    urls.TENANT.clear()
    urls.TENANT.update(runtime)
    yield runtime
    urls.TENANT.clear()
