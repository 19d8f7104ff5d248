"""What ``bench/load.py`` tells the project, read once from the environment.

- ``LOAD_VARIANT``: ``plain``, ``dynroute`` or ``multidb`` (see :mod:`loadsite`);
- ``LOAD_CONFIG``: JSON with the server's ``host``, ``port`` and ``user``, the standby's
  ``standby_port``, the database name ``prefix``, the number of ``tenants`` and the
  ``stats_dir`` where the dynroute variant counts its signals;
- ``LOAD_ASYNC``: ``1`` for the async views (ASGI);
- ``LOAD_MAX_IDLE``: if set, ``DYNROUTE_MAX_IDLE_CONNECTIONS`` (dynroute only);
- ``LOAD_COUNT_EVICTIONS``: ``0`` leaves out the dynroute variant's eviction counter;
- ``LOAD_CONN_MAX_AGE``: ``CONN_MAX_AGE`` of every database (default 60).
"""

from __future__ import annotations

import json
import os
from typing import Any

VARIANT = os.environ.get("LOAD_VARIANT", "plain")
if VARIANT not in {"plain", "dynroute", "multidb"}:
    msg = f"LOAD_VARIANT must be plain, dynroute or multidb, not {VARIANT!r}"
    raise ValueError(msg)
CONFIG: dict[str, Any] = json.loads(os.environ["LOAD_CONFIG"])
ASYNC = os.environ.get("LOAD_ASYNC") == "1"
MAX_IDLE = int(os.environ["LOAD_MAX_IDLE"]) if os.environ.get("LOAD_MAX_IDLE") else None
COUNT_EVICTIONS = os.environ.get("LOAD_COUNT_EVICTIONS", "1") == "1"
CONN_MAX_AGE = int(os.environ.get("LOAD_CONN_MAX_AGE", "60"))
#: The tenants' names, also the suffixes of their databases' names.
TENANTS = frozenset(f"t{number:02d}" for number in range(CONFIG["tenants"]))
SHARED = "shared"
TENANT_HEADER = "X-Tenant"


def database(name: str, *, port: int | None = None) -> dict[str, Any]:
    """Django settings of one database of the benchmark's server (or of its standby)."""
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": f"{CONFIG['prefix']}{name}",
        "HOST": CONFIG["host"],
        "PORT": str(port or CONFIG["port"]),
        "USER": CONFIG["user"],
        "CONN_MAX_AGE": CONN_MAX_AGE,
    }
