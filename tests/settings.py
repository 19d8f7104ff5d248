"""Django settings for dynroute's tests.

``DYNROUTE_TEST_DB`` picks the backend of the configured databases: ``sqlite`` (the
default), ``postgresql`` or ``mariadb``. The servers are the local ones CI provides;
``DYNROUTE_PG_HOST`` etc. point elsewhere.

- ``default`` and ``other``: two independent databases.
- ``replica1`` and ``replica2``: "replicas" of ``default`` for the primary/replica
  routing suite: databases of their own with the same tables, which never receive
  the primary's rows (a replica whose replay is stopped), so a read that went to the
  wrong place shows in the data.
- ``standby`` (PostgreSQL only): a real streaming standby of the server on
  ``DYNROUTE_PG_STANDBY_PORT`` (5433), started by ``tests/standby.py`` for
  ``tests/test_replica_standby.py``; it mirrors ``default``'s test database, and
  ``other_standby`` (the same standby server) mirrors ``other``'s.
- ``gtid_primary`` and ``gtid_replica`` (MariaDB only): a primary and its GTID replica
  of their own, started by ``tests/mariadb_pair.py`` for
  ``tests/test_replica_positions.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

BACKEND = os.environ.get("DYNROUTE_TEST_DB", "sqlite")
# Appended to the test databases' names. By default the process id: two runs on one
# server (two sessions, a helper's run beside CI's) never share a test database; a
# Django test runner started from the suite is given a suffix of its own.
SUFFIX = os.environ.get("DYNROUTE_TEST_NAME_SUFFIX", f"_{os.getpid()}")
# Whether the PostgreSQL standby's aliases are configured (tests/test_replica_standby.py).
STANDBY = os.environ.get("DYNROUTE_TEST_STANDBY", "1") != "0"


ALIASES = ("default", "other", "replica1", "replica2")


def _databases(backend: str) -> dict[str, dict[str, Any]]:
    if backend == "sqlite":
        # Test databases in files, not in memory: Django never closes in-memory SQLite
        # connections, so threads would leave them open; files behave like servers.
        folder = Path(tempfile.gettempdir())
        prefix = f"dynroute-{os.getpid()}"
        # NAME is never opened by the suite, but anything that did would create a file:
        # absolute, so that it lands in the temporary folder, not in the working one.
        return {
            alias: {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / f"{prefix}-{alias}-main.sqlite3"),
                "TEST": {"NAME": str(folder / f"{prefix}-{alias}{SUFFIX}.sqlite3")},
            }
            for alias in ALIASES
        }
    if backend == "postgresql":
        server: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("DYNROUTE_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DYNROUTE_PG_PORT", "5432"),
            "USER": os.environ.get("DYNROUTE_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("DYNROUTE_PG_PASSWORD", ""),
        }
        databases = {
            alias: {
                **server,
                "NAME": f"dynroute_{alias}",
                "TEST": {"NAME": f"test_dynroute_{alias}{SUFFIX}"},
            }
            for alias in ALIASES
        }
        # The standby is a copy of the whole server: "other" has a replica there too,
        # for a tenant with a primary and a replica of its own. Left out for a Django
        # test runner started from the suite, whose "__all__" classes would connect.
        standbys = (("default", "standby"), ("other", "other_standby"))
        for primary, replica in standbys if STANDBY else ():
            databases[replica] = {
                **server,
                "PORT": os.environ.get("DYNROUTE_PG_STANDBY_PORT", "5433"),
                "NAME": f"dynroute_{primary}",
                "TEST": {"MIRROR": primary},
            }
        return databases
    if backend == "mariadb":
        server = {
            "ENGINE": "django.db.backends.mysql",
            "HOST": os.environ.get("DYNROUTE_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DYNROUTE_MYSQL_PORT", "3306"),
            "USER": os.environ.get("DYNROUTE_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("DYNROUTE_MYSQL_PASSWORD", ""),
            "OPTIONS": {"charset": "utf8mb4"},
        }
        databases = {
            alias: {
                **server,
                "NAME": f"dynroute_{alias}",
                "TEST": {"NAME": f"test_dynroute_{alias}{SUFFIX}", "CHARSET": "utf8mb4"},
            }
            for alias in ALIASES
        }
        # A MariaDB primary and its GTID replica of their own (tests/mariadb_pair.py
        # starts them, on ports it chooses, for tests/test_replica_positions.py, which
        # creates default's test database there): mirrors, so that the test framework
        # creates nothing on servers not started yet.
        for alias in ("gtid_primary", "gtid_replica") if STANDBY else ():
            databases[alias] = {**server, "NAME": "dynroute_default", "TEST": {"MIRROR": "default"}}
        return databases
    msg = f"DYNROUTE_TEST_DB must be sqlite, postgresql or mariadb, not {backend!r}"
    raise ValueError(msg)


DATABASES = _databases(BACKEND)
DATABASE_ROUTERS = ["dynroute.DynamicDbRouter"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "dynroute",
    "tests.testapp",
    "tests.fleetapp",
]
if os.environ.get("DYNROUTE_TEST_CELERY"):  # the worker process of tests/test_celery_routes.py
    INSTALLED_APPS.append("dynroute.contrib.celery")
# tests/fleet.py: the databases the fleet suites create (tests/test_fleet*.py).
DYNROUTE_DATABASES = "tests.fleet.databases"
SECRET_KEY = "dynroute-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
