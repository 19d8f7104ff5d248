"""The directory of the fleet suites: databases the tests create, listed in a control file.

``DYNROUTE_DATABASES = "tests.fleet.databases"``. Worker processes of
``manage.py dynroute`` read the directory themselves, from settings: the control file
(``DYNROUTE_TEST_FLEET``, a path fixed when the settings are first imported, so that
every worker process finds the same file) says which databases exist, and on which
of them the migration ``fleetapp.0002`` fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed

if TYPE_CHECKING:
    from django.apps.registry import Apps
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor

CONTROL = Path(
    os.environ.setdefault(
        "DYNROUTE_TEST_FLEET",
        str(Path(tempfile.gettempdir(), f"dynroute-fleet-{os.getpid()}.json")),
    )
)


def write(
    databases: dict[str, dict[str, Any]], fail: list[str] | None = None, slow: float = 0
) -> None:
    """Set the directory (name -> settings), and what ``0002`` does.

    Args:
        databases: The directory, name -> settings.
        fail: The databases (by NAME) on which ``0002`` fails.
        slow: How long ``0002`` takes, in seconds.
    """
    CONTROL.write_text(json.dumps({"databases": databases, "fail": fail or [], "slow": slow}))
    # What a project does when its directory changes under a running process: the
    # process's cached copy (dynroute.database_named) is read again.
    setting_changed.send(None, setting="DYNROUTE_DATABASES", value=None, enter=True)


def _read() -> dict[str, Any]:
    try:
        return json.loads(CONTROL.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {"databases": {}, "fail": [], "slow": 0}


def databases() -> dict[str, dict[str, Any]]:
    """The directory: what ``settings.DYNROUTE_DATABASES`` names."""
    return _read()["databases"]  # type: ignore[no-any-return]


def fail_if_marked(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Raise on a database the control file marks as failing (by its NAME)."""
    name = str(schema_editor.connection.settings_dict["NAME"])
    control = _read()
    time.sleep(control.get("slow", 0))
    if name in control["fail"]:
        msg = f"this migration is made to fail on {Path(name).name}"
        raise RuntimeError(msg)
