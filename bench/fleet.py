"""Many databases: ``manage.py dynroute migrate`` against the loop users write today.

Usage::

    python3 bench/fleet.py                # 100 and 1,000 databases, written to BENCHMARKS.md
    python3 bench/fleet.py --quick        # 10 databases, to keep it working (CI)

Run with an interpreter that has dynroute, Django and psycopg installed (the
project's virtualenv). The run, as root or as the ``postgres`` user:

1. writes a project into a temporary folder: settings, and an app of 50 migrations
   beside Django's auth, contenttypes, admin and sessions;
2. starts a second PostgreSQL server (``initdb``, its own port and data folder) beside
   the one on 127.0.0.1:5432;
3. migrates a template database on each server, and creates the databases from it
   (``CREATE DATABASE ... TEMPLATE``), alternately on each server: the directory
   (``DYNROUTE_DATABASES``) lists them with their settings;
4. times, each in a fresh process, side by side and three times: **the loop**
   (``with in_database(settings) as route: call_command("migrate",
   database=route.alias)`` for each database, the recipe users write), **dynroute**
   (``call_command("dynroute", "migrate", "--parallel", P)``) and **the floor** (``P``
   threads opening each database's connection with psycopg and reading its
   ``django_migrations``, nothing else);
5. adds a 51st migration (a new column) and times the loop and dynroute applying it;
6. drops every database it created, stops and removes the second server.

The parent's peak memory is its ``ru_maxrss`` (the process that runs the command;
worker processes are separate).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from run import write_script_section

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "dynroute_bench_fleet"
TEMPLATE = f"{PREFIX}_template"
MIGRATIONS = 50
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# The project the measuring processes run


SETTINGS = """
import json, os
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1", "PORT": "5432",
    "USER": "postgres", "NAME": "{template}",
}}}}
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "dynroute", "fleetbench",
]
DATABASE_ROUTERS = ["dynroute.DynamicDbRouter"]
DYNROUTE_DATABASES = "fleetbench.databases"
SECRET_KEY = "bench"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {{"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]}},
}}]
"""

APP = '''
import json, os
from pathlib import Path


def databases():
    """The directory: the file the bench writes, name -> settings."""
    return json.loads(Path(os.environ["FLEET_DIRECTORY"]).read_text())
'''


def migration(number: int) -> str:
    """The source of migration ``number`` of the bench app: a model, then its columns."""
    previous = f'[("fleetbench", "{number - 1:04d}_step")]' if number > 1 else "[]"
    if number == 1:
        operation = """migrations.CreateModel("Thing", fields=[
            ("id", models.AutoField(primary_key=True, serialize=False)),
            ("name", models.CharField(max_length=100)),
        ])"""
    elif number % 10 == 0:
        operation = f"""migrations.CreateModel("Other{number}", fields=[
            ("id", models.AutoField(primary_key=True, serialize=False)),
            ("thing", models.ForeignKey("fleetbench.thing", on_delete=models.CASCADE)),
        ])"""
    elif number % 7 == 0:
        operation = f"""migrations.AddIndex("thing", models.Index(
            fields=["name"], name="thing_idx_{number}"))"""
    else:
        operation = f"""migrations.AddField("thing", "field{number}",
            models.CharField(max_length=40, default=""))"""
    return textwrap.dedent(f"""\
        from django.db import migrations, models


        class Migration(migrations.Migration):
            dependencies = {previous}
            operations = [{operation}]
        """)


def write_project(folder: Path, count: int = MIGRATIONS) -> None:
    """Settings and the bench app with ``count`` migrations, in ``folder``."""
    (folder / "fleet_bench_settings.py").write_text(SETTINGS.format(template=TEMPLATE))
    app = folder / "fleetbench"
    (app / "migrations").mkdir(parents=True, exist_ok=True)
    (app / "__init__.py").write_text(APP)
    (app / "models.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    for number in range(1, count + 1):
        (app / "migrations" / f"{number:04d}_step.py").write_text(migration(number))


def add_pending(folder: Path) -> None:
    """Migration 51: a new column, pending everywhere."""
    path = folder / "fleetbench" / "migrations" / f"{MIGRATIONS + 1:04d}_step.py"
    path.write_text(
        textwrap.dedent(f"""\
            from django.db import migrations, models


            class Migration(migrations.Migration):
                dependencies = [("fleetbench", "{MIGRATIONS:04d}_step")]
                operations = [migrations.AddField("thing", "added",
                    models.IntegerField(default=0))]
            """)
    )


# Servers and databases


def run_as_postgres(command: list[str]) -> None:
    """Run a PostgreSQL tool as the postgres user."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def second_server() -> Iterator[int]:
    """A PostgreSQL server of the bench's own: its port."""
    folder = Path(tempfile.mkdtemp(prefix="dynroute-bench-pg-"))
    shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    run_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
    (data / "postgresql.auto.conf").write_text(
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{folder}'\n"
        "max_connections = 200\nfsync = on\n"
    )
    shutil.chown(data / "postgresql.auto.conf", "postgres")
    pg_ctl = str(PG_BIN / "pg_ctl")
    run_as_postgres([pg_ctl, "-D", str(data), "-l", str(folder / "log"), "start", "-w"])
    try:
        yield port
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run_as_postgres([pg_ctl, "-D", str(data), "stop", "-m", "fast", "-w"])
        shutil.rmtree(folder, ignore_errors=True)


def sql(port: int, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
    import psycopg  # noqa: PLC0415 - the measuring processes import it when they need it

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname=database, autocommit=True
    ) as connection:
        cursor = connection.execute(statement)  # type: ignore[call-overload]
        return list(cursor.fetchall()) if cursor.description else []


def settings_of(port: int, name: str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "USER": "postgres",
        "NAME": name,
    }


def create_fleet(ports: list[int], count: int) -> dict[str, dict[str, Any]]:
    """``count`` databases from the template, alternately on each server."""
    directory: dict[str, dict[str, Any]] = {}
    for number in range(count):
        port = ports[number % len(ports)]
        name = f"{PREFIX}_db_{number:04d}"
        sql(port, f"DROP DATABASE IF EXISTS {name}")
        sql(port, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
        directory[f"tenant{number:04d}"] = settings_of(port, name)
    return directory


def drop_fleet(ports: list[int]) -> None:
    for port in ports:
        names = [
            row[0]
            for row in sql(
                port,
                f"SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}_db_%'",  # noqa: S608 - our own prefix
            )
        ]
        for name in names:
            sql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The measuring process: python3 bench/fleet.py measure WHAT


def measure(what: str, parallel: int) -> dict[str, Any]:
    """Time one way of checking (or migrating) every database of the directory."""
    import django  # noqa: PLC0415 - in the measuring process only

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415

    from dynroute import in_database  # noqa: PLC0415

    directory = json.loads(Path(os.environ["FLEET_DIRECTORY"]).read_text())
    started = time.perf_counter()
    if what == "loop":
        for entry in directory.values():
            with in_database(entry, write=True) as route:
                call_command("migrate", database=route.alias, verbosity=0, interactive=False)
    elif what == "dynroute":
        state = str(Path(tempfile.gettempdir()) / f"fleet-bench-state-{os.getpid()}.json")
        with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: PTH123
            try:
                call_command("dynroute", "migrate", "--parallel", str(parallel), "--state", state)
            except SystemExit as exit_:
                if exit_.code:
                    raise
    elif what == "floor":
        floor(directory, parallel)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {"seconds": seconds, "rss_mib": rss}


def floor(directory: dict[str, dict[str, Any]], parallel: int) -> None:
    """Open each database's connection and read its django_migrations, ``parallel`` at once."""
    import psycopg  # noqa: PLC0415

    def read(entry: dict[str, Any]) -> int:
        with psycopg.connect(
            host=entry["HOST"], port=int(entry["PORT"]), user=entry["USER"], dbname=entry["NAME"]
        ) as connection:
            return len(connection.execute("SELECT app, name FROM django_migrations").fetchall())

    with ThreadPoolExecutor(parallel) as threads:
        if not all(threads.map(read, directory.values())):
            msg = "a database of the fleet has no migration recorded"
            raise RuntimeError(msg)


def measured(folder: Path, directory: Path, what: str, parallel: int) -> dict[str, Any]:
    """Run :func:`measure` in a fresh process; its figures."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "fleet_bench_settings",
        "FLEET_DIRECTORY": str(directory),
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, __file__, "measure", what, "--parallel", str(parallel)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        msg = f"measure {what} failed:\n{done.stdout}\n{done.stderr}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


# The run


def median_of(runs: list[dict[str, Any]], key: str = "seconds") -> float:
    return statistics.median(run[key] for run in runs)


def shown(runs: list[dict[str, Any]]) -> str:
    """The median and every run's time."""
    each = ", ".join(f"{run['seconds']:.2f}" for run in runs)
    return f"{median_of(runs):.2f} s ({each})"


def ratios(top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> str:
    values = [a["seconds"] / b["seconds"] for a, b in zip(top, bottom, strict=True)]
    return f"**{statistics.median(values):.1f}x** ({', '.join(f'{v:.1f}' for v in values)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 databases, one run; no file written"
    )
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    arguments = parser.parse_args()
    sizes = [10] if arguments.quick else [100, 1000]
    repeat = 1 if arguments.quick else arguments.repeat
    parallel = arguments.parallel
    folder = Path(tempfile.mkdtemp(prefix="dynroute-bench-fleet-"))
    directory = folder / "directory.json"
    write_project(folder)
    nothing: dict[int, dict[str, list[dict[str, Any]]]] = {}
    pending: dict[int, dict[str, list[dict[str, Any]]]] = {}
    started = dt.datetime.now(dt.timezone.utc)
    with second_server() as other:
        ports = [5432, other]
        try:
            for port in ports:
                sql(port, f"DROP DATABASE IF EXISTS {TEMPLATE}")
                sql(port, f"CREATE DATABASE {TEMPLATE}")
            directory.write_text(
                json.dumps({f"template{p}": settings_of(p, TEMPLATE) for p in ports})
            )
            print("migrating the templates ...", flush=True)
            measured(folder, directory, "loop", 1)
            for size in sizes:
                print(f"{size} databases: creating ...", flush=True)
                drop_fleet(ports)
                directory.write_text(json.dumps(create_fleet(ports, size)))
                runs: dict[str, list[dict[str, Any]]] = {"loop": [], "dynroute": [], "floor": []}
                order = list(runs)
                for number in range(repeat):
                    for what in order[number % 3 :] + order[: number % 3]:
                        runs[what].append(measured(folder, directory, what, parallel))
                        print(f"  nothing to apply, {what}: {runs[what][-1]}", flush=True)
                nothing[size] = runs
            add_pending(folder)
            for size in sizes:
                kinds = ("loop", "dynroute") if size == min(sizes) else ("dynroute",)
                runs = {kind: [] for kind in kinds}
                for number in range(repeat if size == min(sizes) else 1):
                    for what in kinds if number % 2 == 0 else tuple(reversed(kinds)):
                        print(f"{size} databases, one pending: creating ...", flush=True)
                        drop_fleet(ports)
                        directory.write_text(json.dumps(create_fleet(ports, size)))
                        runs[what].append(measured(folder, directory, what, parallel))
                        print(f"  one pending, {what}: {runs[what][-1]}", flush=True)
                pending[size] = runs
        finally:
            drop_fleet(ports)
            for port in ports:
                sql(port, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            shutil.rmtree(folder, ignore_errors=True)
    text = report(nothing, pending, arguments, started)
    print(text)
    if not arguments.quick:
        title, _, body = text.partition("\n\n")
        write_script_section(arguments.output, "fleet.py", title, body.rstrip())
        print(f"written to {arguments.output}")
    return 0


def report(
    nothing: dict[int, dict[str, list[dict[str, Any]]]],
    pending: dict[int, dict[str, list[dict[str, Any]]]],
    arguments: argparse.Namespace,
    started: dt.datetime,
) -> str:
    """The section of BENCHMARKS.md."""
    import django  # noqa: PLC0415
    import psycopg  # noqa: PLC0415

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    command = "python3 bench/fleet.py" + (" --quick" if arguments.quick else "")
    p = arguments.parallel
    lines = [
        "### Many databases: `manage.py dynroute migrate` against the loop",
        "",
        (
            f"Command: `{command}`, run {started:%Y-%m-%d %H:%M} UTC at commit {commit}. "
            f"Python {platform.python_version()}, Django {django.get_version()}, psycopg "
            f"{psycopg.__version__}; {os.cpu_count()} CPUs. Two PostgreSQL 15 servers on this "
            "machine (127.0.0.1:5432, and one the run starts on its own port), the databases "
            "created from a migrated template, alternately on each. Migration history: "
            f"Django's auth, contenttypes, admin and sessions, and an app of {MIGRATIONS} "
            "migrations. Each figure is a fresh process; the median of the runs, every run "
            "in brackets (the variants in rotating order)."
        ),
        "",
        (
            '- **loop**: `with in_database(settings) as route: call_command("migrate", '
            "database=route.alias)` for each database, one after the other (the recipe "
            "users write)."
        ),
        f'- **dynroute**: `call_command("dynroute", "migrate", "--parallel", "{p}")`.',
        (
            f"- **floor**: {p} threads opening each database's connection with psycopg and "
            "reading its `django_migrations`, nothing else."
        ),
        "",
        "Nothing to apply:",
        "",
        (
            "| databases | loop | dynroute | floor | loop / dynroute (goal ≥ 20x) "
            "| dynroute / floor (goal ≤ 2x) | loop / floor (the most any tool could gain) "
            "| dynroute's peak memory |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, runs in nothing.items():
        lines.append(
            f"| {size:,} | {shown(runs['loop'])} | {shown(runs['dynroute'])} | "
            f"{shown(runs['floor'])} | {ratios(runs['loop'], runs['dynroute'])} | "
            f"{ratios(runs['dynroute'], runs['floor'])} | "
            f"{ratios(runs['loop'], runs['floor'])} | "
            f"{median_of(runs['dynroute'], 'rss_mib'):.0f} MiB |"
        )
    lines += [
        "",
        f"One pending migration (a new column) on every database, `--parallel {p}`:",
        "",
        "| databases | loop | dynroute | dynroute / loop (goal ≤ 0.33) | dynroute's peak memory |",
        "|---|---|---|---|---|",
    ]
    for size, runs in pending.items():
        loop = runs.get("loop")
        ratio = "not run (the loop takes minutes at this size)"
        if loop:
            values = [
                ours["seconds"] / theirs["seconds"]
                for ours, theirs in zip(runs["dynroute"], loop, strict=True)
            ]
            ratio = f"**{statistics.median(values):.2f}** ({', '.join(f'{v:.2f}' for v in values)})"
        lines.append(
            f"| {size:,} | {shown(loop) if loop else '-'} | {shown(runs['dynroute'])} | {ratio} | "
            f"{median_of(runs['dynroute'], 'rss_mib'):.0f} MiB |"
        )
    sizes = sorted(nothing)
    if len(sizes) > 1:
        low, high = (median_of(nothing[s]["dynroute"], "rss_mib") for s in (sizes[0], sizes[-1]))
        lines += [
            "",
            (
                f"Peak memory of the process running `dynroute migrate`, nothing to apply: "
                f"{low:.0f} MiB for {sizes[0]:,} databases, {high:.0f} MiB for {sizes[-1]:,}: "
                f"**{high - low:+.0f} MiB** (goal: within +50 MB)."
            ),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        what = sys.argv[2]
        figures = measure(what, int(sys.argv[4]))
        print(json.dumps(figures))
        sys.exit(0)
    sys.exit(main())
