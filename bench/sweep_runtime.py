"""How a block on a runtime configuration costs as the configurations registered grow.

A database per tenant registers one configuration per tenant a worker has served. This
sweep registers N kept configurations (reuse mode: ``CONN_MAX_AGE`` set, the idle
bound above N), each on a database of its own, then measures, with N registered:

- **first entry**: ``with in_database(settings): Group.objects.exists()`` on a
  configuration never seen (teardown mode, ``CONN_MAX_AGE=0``): register, connect,
  query, close, unregister;
- **re-entry**: the same on a kept configuration (its connection kept);
- **eviction**: the same on a new kept configuration with the idle bound at N, so
  that its exit evicts the least recently used one (SQLite: every kept
  configuration holds its connection; PostgreSQL: not measured, see below);
- **memory per kept configuration**: the process's RSS after registering N, less
  before, over N;
- for SQLite, the control: ``sqlite3`` alone opening a new file, one query, closing
  it, in the same process with the N files held open. SQLite's Unix VFS looks each
  new file up in a list of the files it has open, so its open grows with N: the first
  entry and the eviction (which opens a new file) follow it;
- for SQLite, the first entry again once the N kept configurations' connections are
  closed (they stay registered, as after Django closes connections older than
  ``CONN_MAX_AGE`` at the end of a request): dynroute's own cost, without the VFS's.

SQLite: N up to 10,000, each a file copied from a template. PostgreSQL (127.0.0.1,
user ``postgres``): N up to 1,000 databases, created from a template by this script
and dropped at the end; a server allows ``max_connections`` (100 here), so the kept
configurations' connections are closed after registering (as Django does at the end
of a request once ``CONN_MAX_AGE`` has passed) and the eviction row is left out.

Each N runs in a process of its own. Medians of wall-clock time (a block waits on
its database). Usage::

    python3 bench/sweep_runtime.py                    # prints the table
    python3 bench/sweep_runtime.py --write            # and writes it to BENCHMARKS.md
    python3 bench/sweep_runtime.py --sqlite 10,100 --postgresql ""   # a quick look

Run it with dynroute, Django and psycopg importable (the dev venv).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from run import write_script_section

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

ROOT = Path(__file__).resolve().parent.parent
FIRST, REENTRY, EVICTION = 300, 2000, 200
PG = {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres"}
PG_PREFIX = "dynroute_sweep"


def rss_kib() -> int:
    """The process's resident memory now, KiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def median_us(
    block: Callable[[], AbstractContextManager[object]], query: Callable[[], object], times: int
) -> float:
    """Median wall-clock µs of entering ``block()``, running ``query()``, leaving."""
    samples = []
    for _ in range(times):
        entered = block()
        started = time.perf_counter_ns()
        with entered:
            query()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def one(backend: str, count: int) -> dict[str, Any]:  # noqa: C901 - one process, measured in order
    """Measure with ``count`` kept configurations registered (in this process)."""
    import django  # noqa: PLC0415 - configured here, in the measuring process
    from django.conf import settings  # noqa: PLC0415

    folder = Path(tempfile.mkdtemp(prefix="dynroute-sweep-"))
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "d.db")}
        },
        DATABASE_ROUTERS=["dynroute.DynamicDbRouter"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DYNROUTE_MAX_IDLE_CONNECTIONS=count + 10,
        USE_TZ=True,
    )
    django.setup()
    from django.contrib.auth.models import Group  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415
    from django.test.utils import override_settings  # noqa: PLC0415

    import dynroute  # noqa: PLC0415

    pool = count + 3 * FIRST + EVICTION + 1
    if backend == "sqlite":
        template = folder / "template.db"
        with sqlite3.connect(template) as database:
            database.execute("CREATE TABLE auth_group (id integer primary key, name text)")
        for number in range(pool):
            shutil.copyfile(template, folder / f"t{number}.db")

        def settings_of(number: int, max_age: int) -> dict[str, Any]:
            return {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(folder / f"t{number}.db"),
                "CONN_MAX_AGE": max_age,
            }
    else:

        def settings_of(number: int, max_age: int) -> dict[str, Any]:
            return {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": f"{PG_PREFIX}_{number}",
                "CONN_MAX_AGE": max_age,
                **PG,
            }

    def query() -> None:
        Group.objects.exists()

    before = rss_kib()
    for number in range(count):
        with dynroute.in_database(settings_of(number, 600), alias=f"kept_{number}"):
            query()
        if backend == "postgresql":
            connections[f"kept_{number}"].close()  # a server allows 100 connections
    kept_kib = (rss_kib() - before) / count
    kept = dynroute.in_database(settings_of(0, 600), alias="kept_0")
    with kept:
        query()  # its connection is open again (PostgreSQL), and kept
    reentry = median_us(lambda: kept, query, REENTRY)
    fresh = iter(range(count, pool))
    first = median_us(
        lambda: dynroute.in_database(settings_of(next(fresh), 0), alias=None), query, FIRST
    )
    eviction = raw = None
    first_closed: float
    if backend == "sqlite":
        # The same open + query + close with sqlite3 alone, as many files held open.
        samples = []
        for _ in range(FIRST):
            started = time.perf_counter_ns()
            database = sqlite3.connect(folder / f"t{next(fresh)}.db")
            database.execute("SELECT 1 FROM auth_group LIMIT 1").fetchall()
            database.close()
            samples.append(time.perf_counter_ns() - started)
        raw = statistics.median(samples) / 1000
        with override_settings(DYNROUTE_MAX_IDLE_CONNECTIONS=count):
            eviction = median_us(
                lambda: dynroute.in_database(settings_of(next(fresh), 600)), query, EVICTION
            )
            assert len(dynroute.runtime.active_aliases()) <= count + 1  # noqa: S101 - evicting
        registered = dynroute.runtime.active_aliases()
        for alias in registered:
            connections[alias].close()
        first_closed = median_us(
            lambda: dynroute.in_database(settings_of(next(fresh), 0), alias=None), query, FIRST
        )
        assert dynroute.runtime.active_aliases() == registered  # noqa: S101 - still kept
    else:
        first_closed = first  # the kept configurations' connections are closed already
    dynroute.close_idle_connections()
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "backend": backend,
        "count": count,
        "first_us": first,
        "first_closed_us": first_closed,
        "reentry_us": reentry,
        "eviction_us": eviction,
        "raw_us": raw,
        "kept_kib": kept_kib,
    }


def postgres(statements: list[str]) -> None:
    """Run statements on the server's postgres database, in autocommit."""
    import psycopg  # noqa: PLC0415 - only for the PostgreSQL part

    with psycopg.connect(dbname="postgres", autocommit=True, **PG_CONNECT) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


PG_CONNECT = {"host": PG["HOST"], "port": PG["PORT"], "user": PG["USER"]}


def create_databases(count: int) -> None:
    """A template with the table, then ``count`` databases copied from it."""
    import psycopg  # noqa: PLC0415

    drop_databases(count)
    postgres([f"CREATE DATABASE {PG_PREFIX}_template"])
    with psycopg.connect(dbname=f"{PG_PREFIX}_template", autocommit=True, **PG_CONNECT) as db:
        db.execute("CREATE TABLE auth_group (id serial primary key, name varchar(150))")
    postgres(
        [f"CREATE DATABASE {PG_PREFIX}_{n} TEMPLATE {PG_PREFIX}_template" for n in range(count)]
    )


def drop_databases(count: int) -> None:
    postgres(
        [f"DROP DATABASE IF EXISTS {PG_PREFIX}_{n}" for n in range(count)]
        + [f"DROP DATABASE IF EXISTS {PG_PREFIX}_template"]
    )


def table(results: list[dict[str, Any]]) -> str:
    def cell(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:,.0f} {unit}"

    lines = [
        (
            "| backend | configurations registered | first entry | first entry, kept "
            "connections closed | re-entry | eviction | memory per kept configuration | "
            "sqlite3 alone: open, query, close a new file |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {'SQLite' if row['backend'] == 'sqlite' else 'PostgreSQL'} | {row['count']:,} | "
        f"{cell(row['first_us'], 'µs')} | {cell(row['first_closed_us'], 'µs')} | "
        f"{cell(row['reentry_us'], 'µs')} | "
        f"{cell(row['eviction_us'], 'µs')} | {cell(row['kept_kib'], 'KiB')} | "
        f"{cell(row['raw_us'], 'µs')} |"
        for row in results
    )
    for backend in ("sqlite", "postgresql"):
        rows = [row for row in results if row["backend"] == backend]
        if len(rows) > 1:
            low, high = rows[0], rows[-1]
            lines.append("")
            lines.append(
                f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, {high['count']:,} against "
                f"{low['count']:,}: first entry {high['first_us'] / low['first_us']:.2f}x "
                f"(kept connections closed: "
                f"{high['first_closed_us'] / low['first_closed_us']:.2f}x), "
                f"re-entry {high['reentry_us'] / low['reentry_us']:.2f}x."
            )
    return "\n".join(lines)


def measure_row(backend: str, count: int) -> dict[str, Any]:
    """Measure one row in a process of its own."""
    print(f"{backend}, {count} registered ...", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, __file__, "--one", backend, str(count)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", default="10,100,1000,10000")
    parser.add_argument("--postgresql", default="10,100,1000")
    parser.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "COUNT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        print(json.dumps(one(arguments.one[0], int(arguments.one[1]))))
        return 0
    sqlite_counts = [int(n) for n in arguments.sqlite.split(",") if n]
    pg_counts = [int(n) for n in arguments.postgresql.split(",") if n]
    pg_total = max(pg_counts, default=0) + 3 * FIRST + EVICTION + 1
    # SQLite first, then the PostgreSQL databases: creating and dropping them writes
    # gigabytes, which slowed whatever row came next by up to 60% (all of its columns).
    results = [measure_row("sqlite", count) for count in sqlite_counts]
    if pg_counts:
        print("creating the PostgreSQL databases ...", file=sys.stderr)
        create_databases(pg_total)
        postgres(["CHECKPOINT"])  # their writes done before the first row, not during it
        try:
            results += [measure_row("postgresql", count) for count in pg_counts]
        finally:
            drop_databases(pg_total)
    now = dt.datetime.now(dt.timezone.utc)
    text = "\n".join(
        [
            f"Command: `python3 bench/sweep_runtime.py` (dev venv), run {now:%Y-%m-%d %H:%M} UTC.",
            "",
            table(results),
        ]
    )
    print(text)
    if arguments.write:
        path = ROOT / "BENCHMARKS.md"
        title = "### Runtime configurations against how many are registered"
        write_script_section(path, "sweep_runtime.py", title, text)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
