"""Load benchmark: one Django project on real servers, real PostgreSQL, 16 concurrent users.

Usage (from the repository root)::

    python3 bench/load.py                  # full size: 6,000 requests a run, 3 rounds
                                           # (about 8 minutes a round on 2 busy cores)
    python3 bench/load.py --quick          # a smoke run: 600 requests a run, 1 round (2 min)
    python3 bench/load.py --write          # also rewrite its section of BENCHMARKS.md
    python3 bench/load.py --servers uvicorn --variants plain,dynroute --rounds 1

It creates ``bench/.venv-load`` when missing (Django 5.2, psycopg, gunicorn, uvicorn,
httpx, django-multidb-router 0.11, and dynroute from this checkout, editable) and runs
itself there. It needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust auth) and
root or the ``postgres`` user to start a standby. It creates, and drops when it ends
(on Ctrl-C or an error too): a role ``dynroute_load`` for the servers (its
``CONNECTION LIMIT`` keeps a few of the server's connections for the other users of
the server), a template database holding the tables, a shared database and 20 tenant
databases copied from it (``dynroute_load_*``), and a streaming standby of the server
(``tests/standby.py``, with a replication slot).

The project (``bench/loadsite``) is served by gunicorn (``--workers 2 --threads 2``,
sync views) and uvicorn (``--workers 2``, async views), each in the variants asked
for (``--variants``). Two threads, not four: plain Django keeps a connection per
thread to every database it has used (``CONN_MAX_AGE``): 4 threads x 21 databases =
84, within the 87 the role may open on a server of ``max_connections = 100`` (less 3
kept for superusers and 10 for the server's other users); with ``--threads 4`` (168)
plain Django and multidb fail with "too many connections for role", a finding rather
than a measure of their speed. The variants:

- ``plain``: tenant databases in ``DATABASES``, views name them with ``.using()``,
  shared reads with ``.using("replica")``;
- ``dynroute``: ``dynroute.DynamicDbRouter``, ``PrimaryReplicaMiddleware`` (the shared
  database: its primary and the standby) then ``DatabaseMiddleware`` (a resolver
  returning the tenant's settings dict, with the same ``CONN_MAX_AGE``); views with no
  ``.using()``; dynroute's defaults otherwise. ``dynroute@N`` sets
  ``DYNROUTE_MAX_IDLE_CONNECTIONS = N``; ``dynroute/bare`` (or ``dynroute@N/bare``)
  leaves out the eviction counter below;
- ``multidb``: django-multidb-router 0.11's ``PinningReplicaRouter`` and
  ``PinningRouterMiddleware`` for the shared database, ``.using()`` for the tenants.

Every database has ``CONN_MAX_AGE = 60`` under gunicorn and ``0`` under uvicorn, as
Django's documentation says for ASGI ("persistent connections should be disabled"):
Django runs each ASGI request's sync code in a thread of its own, so a kept
connection is never reused, and plain Django runs out of server connections
("too many connections for role"). ``--conn-max-age`` sets one value for both.

Each user (an ``httpx.AsyncClient`` with its own cookie jar) repeats flows chosen
at random (seeded) until the run's requests are sent, one request at a time, each on
a new connection, as a proxy such as nginx sends them by default. (With keep-alive,
the 16 connections of a run stay with the worker that accepted them: in runs where
one worker got most of them, half the threads worked, and one variant's throughput
moved by 20% from run to run.) The flows: a tenant read (GET, 4 in 13 flows), a
tenant write then a read of what it wrote (POST, GET: 2 in 13), a read of the shared
database (GET, 3 in 13, the replica's work), a shared write then a read of it (POST,
GET: 1 in 13, read your writes through the pin). Each flow names a random tenant
(header ``X-Tenant``). ``--mix tenant`` runs the tenant flows only. The first
``--warmup`` requests of a run are left out of the timings (not of the checks).
Replay on the standby is paused from a third to two thirds of the timed requests, so
the replica lags on purpose.

Figures, per server and variant:

- **requests/s**: timed requests over the time from the first to the last of them;
  **x plain**: over plain Django's on the same server (median of the rounds' ratios,
  the lowest and highest in brackets);
- **server CPU / request**: CPU time (user and system) of the server's processes over
  the run, per request (warm-up included): what a variant costs the server, less
  noisy than throughput on a shared machine;
- **p50, p99**: latency of one request, as the client sees it;
- **stale reads**: a read right after this user's write (same flow) that does not see
  the write;
- **misroutes**: answers whose marker (every database holds a row naming it) is not
  the database the request was for, plus rows found after the run in a database other
  than the one their request named, plus acknowledged writes found nowhere;
- **errors**: answers other than 200 and exceptions in the client (timeouts, reset
  connections); the causes found in the servers' logs are listed under the table;
- **peak connections**: the most client connections to the benchmark's databases in
  ``pg_stat_activity``, polled every 0.1 s, on the primary / on the standby;
- **connections opened**: sessions opened during the run, on both servers
  (``pg_stat_database.sessions``): connection churn;
- **shared reads on standby**: the share of the plain shared reads (``/shared/read``,
  not the read that follows a write) the standby answered; a user whose recent POST
  pinned it (dynroute: 2 s, any POST; multidb: 15 s) reads the primary instead;
- **evictions** (dynroute): runtime configurations closed with reason ``"eviction"``
  (a receiver of ``dynroute.signals.configuration_closed`` in each server process,
  ``bench/loadsite/stats.py``). Connecting any receiver makes every block take its
  checked entry and send its signals, so the counter may cost the variant some
  throughput: ``dynroute/bare`` runs without it;
- **warnings** (dynroute): lines the ``dynroute`` logger wrote at WARNING on the
  servers' stderr.

Throughput, latency, connections and evictions are medians over the rounds (each
round runs every variant once, in a rotating order); stale reads, misroutes, errors
and warnings are totals over the rounds. The machine is shared: compare variants of
one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from run import write_script_section

if TYPE_CHECKING:
    import httpx
    import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv-load"
REQUIREMENTS = [
    "django==5.2.*",
    "psycopg[binary]>=3.1",
    "gunicorn>=23",
    "uvicorn[standard]>=0.30",
    "httpx>=0.27",
    "django-multidb-router==0.11",
]
HOST, PORT, SUPERUSER = "127.0.0.1", 5432, "postgres"
PREFIX = "dynroute_load_"
ROLE = "dynroute_load"
TEMPLATE, SHARED = f"{PREFIX}template", "shared"
VARIANTS = ("plain", "dynroute", "dynroute@4", "multidb")
SERVERS = ("gunicorn", "uvicorn")
# flow -> weight: tenant read, tenant write + read, shared read, shared write + read
FLOWS = {"tenant read": 4, "tenant write": 2, "shared read": 3, "shared write": 1}
TABLES = """
CREATE TABLE load_marker_row (id integer PRIMARY KEY, name text NOT NULL);
CREATE VIEW load_marker AS
    SELECT id, name, pg_is_in_recovery() AS standby FROM load_marker_row;
CREATE TABLE load_note (
    id bigserial PRIMARY KEY,
    token uuid NOT NULL UNIQUE,
    tenant text NOT NULL,
    user_name text NOT NULL,
    body text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX load_note_user ON load_note (user_name);
"""


# The throwaway venv.


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(*, fresh: bool) -> None:
    """Create ``bench/.venv-load`` with the servers, the client and dynroute, if needed."""
    if fresh and VENV.exists():
        shutil.rmtree(VENV)
    python = venv_python()
    if not python.exists():
        print(f"creating {VENV.relative_to(ROOT)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = (
        "import os, django, psycopg, gunicorn, uvicorn, httpx, multidb, dynroute; "
        "print(django.VERSION[:2], multidb.__version__, os.path.dirname(dynroute.__file__))"
    )
    wanted = f"(5, 2) 0.11.0 {ROOT / 'src' / 'dynroute'}"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if found.stdout.strip() == wanted:
        return
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
            "-e",
            str(ROOT),
        ],
        check=True,
    )


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


# The databases.


def admin(dbname: str = "postgres", port: int = PORT) -> psycopg.Connection[Any]:
    """A superuser connection in autocommit."""
    import psycopg  # noqa: PLC0415 - imported in the venv only

    return psycopg.connect(host=HOST, port=port, user=SUPERUSER, dbname=dbname, autocommit=True)


@dataclass
class Databases:
    """The benchmark's databases on the primary, and the standby once started."""

    tenants: list[str]
    standby: Any = None  # tests.standby.Standby
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """The shared database first, then the tenants'."""
        self.names = [SHARED, *self.tenants]

    @staticmethod
    def database(name: str) -> str:
        """The name of the database of a tenant, or of ``"shared"``."""
        return f"{PREFIX}{name}"

    def create(self, connection_limit: int | None) -> int:
        """Create the role, the template, the shared and tenant databases; return the limit."""
        with admin() as connection:
            self.drop_leftovers(connection)
            if connection_limit is None:
                settings = {
                    name: int(connection.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                    for name in ("max_connections", "superuser_reserved_connections")
                }
                # Keep 10 connections for the server's other users (a test suite).
                connection_limit = (
                    settings["max_connections"] - settings["superuser_reserved_connections"] - 10
                )
            connection.execute(
                f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER CONNECTION LIMIT {int(connection_limit)}"
            )
            connection.execute(f"CREATE DATABASE {TEMPLATE}")
            with admin(TEMPLATE) as template:
                template.execute(TABLES)
                template.execute(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}"
                )
                template.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")
            for name in self.names:
                connection.execute(f"CREATE DATABASE {self.database(name)} TEMPLATE {TEMPLATE}")
                with admin(self.database(name)) as database:
                    database.execute(
                        "INSERT INTO load_marker_row (id, name) VALUES (1, %s)",
                        [self.database(name)],
                    )
        return connection_limit

    @staticmethod
    def drop_leftovers(connection: psycopg.Connection[Any]) -> None:
        """Drop the databases and the role this script creates, left by a run that died."""
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [PREFIX.replace("_", r"\_") + "%"],
        ).fetchall()
        for (name,) in rows:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f"DROP ROLE IF EXISTS {ROLE}")

    def start_standby(self) -> None:
        """Start the streaming standby (``tests/standby.py``) and wait for it to replay."""
        sys.path.insert(0, str(ROOT))
        from tests import standby  # noqa: PLC0415 - the repository's fixture

        with admin() as connection:
            self.standby = standby.start(
                {"HOST": HOST, "PORT": PORT, "USER": SUPERUSER}, connection.cursor()
            )
        self.wait_for_replay()

    def wait_for_replay(self) -> None:
        """Resume replay on the standby and wait until it has replayed the primary's WAL."""
        from tests import standby  # noqa: PLC0415

        with admin() as primary, admin(port=self.standby.port) as replica:
            replica.execute("SELECT pg_wal_replay_resume()")
            standby.wait_for_replay(primary.cursor(), replica.cursor(), seconds=300)

    def reset(self) -> None:
        """Empty the notes of every database, then wait for the standby to replay it."""
        for name in self.names:
            with admin(self.database(name)) as database:
                database.execute("TRUNCATE load_note")
        self.wait_for_replay()

    def notes(self) -> dict[str, list[tuple[str, str]]]:
        """Every database's notes: (tenant the request named, token)."""
        found = {}
        for name in self.names:
            with admin(self.database(name)) as database:
                rows = database.execute("SELECT tenant, token::text FROM load_note").fetchall()
                found[name] = [(tenant, token) for tenant, token in rows]
        return found

    def sessions(self) -> int:
        """Sessions opened so far on the benchmark's databases, primary and standby."""
        total = 0
        for port in (PORT, self.standby.port):
            with admin(port=port) as connection:
                connection.execute("SELECT pg_stat_clear_snapshot()")
                row = connection.execute(
                    "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname LIKE %s",
                    [PREFIX.replace("_", r"\_") + "%"],
                ).fetchone()
                total += int(row[0]) if row else 0
        return total

    def drop(self) -> None:
        """Stop and remove the standby and its slot, drop the databases and the role."""
        with admin() as connection:
            if self.standby is not None:
                self.standby.remove(connection.cursor())
                self.standby = None
            self.drop_leftovers(connection)


class ConnectionPoller(threading.Thread):
    """Polls ``pg_stat_activity`` on the primary and the standby; keeps the peaks."""

    QUERY = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname LIKE 'dynroute\\_load\\_%' AND backend_type = 'client backend'"
    )

    def __init__(self, standby_port: int) -> None:
        """Connect to both servers now: the servers under load may take every connection."""
        super().__init__(daemon=True)
        self.ports = (PORT, standby_port)
        self.peaks = [0, 0]
        self.stopping = threading.Event()
        self.connections = [admin(port=port) for port in self.ports]

    def run(self) -> None:
        """Poll until stopped."""
        while not self.stopping.is_set():
            for index, connection in enumerate(self.connections):
                row = connection.execute(self.QUERY).fetchone()
                self.peaks[index] = max(self.peaks[index], int(row[0]) if row else 0)
            self.stopping.wait(0.1)

    def stop(self) -> tuple[int, int]:
        """Stop polling; return the peaks on the primary and on the standby."""
        self.stopping.set()
        self.join()
        for connection in self.connections:
            connection.close()
        return self.peaks[0], self.peaks[1]


# The servers.


@dataclass(frozen=True)
class Variant:
    """A variant of the project, as ``--variants`` names it.

    ``plain``, ``dynroute``, ``multidb``; ``dynroute@N`` sets
    ``DYNROUTE_MAX_IDLE_CONNECTIONS = N``; a ``/bare`` suffix on a dynroute variant
    leaves out the eviction counter (a receiver of dynroute's signals, which makes
    every block send them: see the module's docstring).
    """

    spec: str

    @property
    def name(self) -> str:
        """``plain``, ``dynroute`` or ``multidb``."""
        return self.spec.partition("@")[0].partition("/")[0]

    @property
    def max_idle(self) -> int | None:
        """``DYNROUTE_MAX_IDLE_CONNECTIONS`` if the variant sets it."""
        bound = self.spec.partition("@")[2].partition("/")[0]
        return int(bound) if bound else None

    @property
    def counted(self) -> bool:
        """Whether the servers count dynroute's evictions (a signal receiver)."""
        return self.name == "dynroute" and not self.spec.endswith("/bare")

    @property
    def label(self) -> str:
        """The variant's name in the table."""
        if self.name != "dynroute":
            return "plain Django" if self.name == "plain" else "django-multidb-router 0.11"
        bound = (
            "defaults"
            if self.max_idle is None
            else f"`DYNROUTE_MAX_IDLE_CONNECTIONS={self.max_idle}`"
        )
        return f"dynroute, {bound}" + ("" if self.counted else ", no signal receiver")


def group_cpu_seconds(group: int) -> float:
    """CPU time (user and system) used by the live processes of process group ``group``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # After the command's closing parenthesis: state, ppid, pgrp, ... utime, stime.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def conn_max_age(options: argparse.Namespace, kind: str) -> int:
    """``CONN_MAX_AGE`` for ``kind``'s server: as given, or 60 under WSGI and 0 under ASGI."""
    if options.conn_max_age is not None:
        return int(options.conn_max_age)
    return 0 if kind == "uvicorn" else 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """One server process group (gunicorn or uvicorn and their workers)."""

    kind: str
    variant: Variant
    folder: Path
    options: argparse.Namespace
    standby_port: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the server listens."""
        return f"http://{HOST}:{self.port}"

    @property
    def stderr(self) -> Path:
        """The file the server and its workers write their stderr to."""
        return self.folder / "server.stderr"

    @property
    def stats(self) -> Path:
        """The folder of the dynroute variant's counters (loadsite.stats)."""
        return self.folder / "stats"

    def command(self) -> list[str]:
        """The server's command line."""
        binary = VENV / "bin" / self.kind
        workers = str(self.options.workers)
        if self.kind == "gunicorn":
            return [
                str(binary),
                "loadsite.wsgi:application",
                f"--bind={HOST}:{self.port}",
                f"--workers={workers}",
                f"--threads={self.options.threads}",
                "--log-level=warning",
                "--timeout=120",
            ]
        return [
            str(binary),
            "loadsite.asgi:application",
            f"--host={HOST}",
            f"--port={self.port}",
            f"--workers={workers}",
            "--log-level=warning",
            "--no-access-log",
            "--lifespan=off",  # Django does not speak the lifespan protocol
        ]

    def start(self) -> None:
        """Start the server with the variant's environment, in a process group of its own."""
        self.stats.mkdir(parents=True, exist_ok=True)
        config = {
            "host": HOST,
            "port": PORT,
            "user": ROLE,
            "standby_port": self.standby_port,
            "prefix": PREFIX,
            "tenants": self.options.tenants,
            "stats_dir": str(self.stats),
        }
        environment = {
            **os.environ,
            "PYTHONPATH": str(BENCH),
            "DJANGO_SETTINGS_MODULE": "loadsite.settings",
            "LOAD_VARIANT": self.variant.name,
            "LOAD_CONFIG": json.dumps(config),
            "LOAD_ASYNC": "1" if self.kind == "uvicorn" else "0",
            "LOAD_CONN_MAX_AGE": str(conn_max_age(self.options, self.kind)),
        }
        environment.pop("LOAD_MAX_IDLE", None)
        if self.variant.max_idle is not None:
            environment["LOAD_MAX_IDLE"] = str(self.variant.max_idle)
        environment["LOAD_COUNT_EVICTIONS"] = "1" if self.variant.counted else "0"
        with self.stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                self.command(),
                env=environment,
                cwd=BENCH,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own group: Ctrl-C reaches this script only
            )

    def wait_until_up(self, seconds: float = 120) -> None:
        """Wait until the server answers (raise with its stderr if it does not)."""
        import httpx  # noqa: PLC0415

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        tail = self.stderr.read_text(errors="replace")[-2000:]
        msg = f"{self.kind} ({self.variant.spec}) did not come up:\n{tail}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop the server and its workers: SIGTERM to its group, SIGKILL after 30 s."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Workers of the group may outlive their parent for a moment.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server's processes have used so far."""
        if self.process is None:
            return 0.0
        return group_cpu_seconds(self.process.pid)

    def count(self, event: str) -> int:
        """How many times the dynroute variant's servers counted ``event`` (loadsite.stats)."""
        return sum(path.stat().st_size for path in self.stats.glob(f"{event}.*"))

    def log(self) -> tuple[list[str], Counter[str]]:
        """The dynroute WARNING lines, and the causes of the 500s, from the servers' stderr."""
        warnings: list[str] = []
        causes: Counter[str] = Counter()
        cause: str | None = None
        exception = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)\b.*)$")
        for line in self.stderr.read_text(errors="replace").splitlines():
            if line.startswith("WARNING dynroute"):
                warnings.append(line)
            if line.startswith(("ERROR ", "WARNING ", "CRITICAL ", "[")):
                if cause is not None:
                    causes[cause] += 1
                cause = "(no traceback)" if line.startswith("ERROR django.request") else None
            elif cause is not None and (found := exception.match(line.strip())):
                cause = " ".join(found.group(1).split())[:240]
        if cause is not None:
            causes[cause] += 1
        return warnings, causes


# The client.


@dataclass
class Tally:
    """What the client saw in one run."""

    total: int
    warmup: int
    pause_at: int
    resume_at: int
    issued: int = 0
    latencies: list[float] = field(default_factory=list)
    first_timed: float | None = None
    last_timed: float = 0.0
    stale: Counter[str] = field(default_factory=Counter)
    misroutes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    shared_reads: int = 0
    on_standby: int = 0
    written: dict[str, set[str]] = field(default_factory=dict)
    paused_seconds: float = 0.0


class Replay:
    """Pauses and resumes replay on the standby (a connection of its own)."""

    def __init__(self, standby_port: int) -> None:
        """Connect to the standby."""
        self.connection = admin(port=standby_port)
        self.paused_at: float | None = None
        self.paused_seconds = 0.0

    def pause(self) -> None:
        """Pause replay: the replica lags from now on."""
        self.connection.execute("SELECT pg_wal_replay_pause()")
        self.paused_at = time.monotonic()

    def resume(self) -> None:
        """Resume replay; add the time it was paused."""
        self.connection.execute("SELECT pg_wal_replay_resume()")
        if self.paused_at is not None:
            self.paused_seconds += time.monotonic() - self.paused_at
            self.paused_at = None

    def close(self) -> None:
        """Resume replay (always, whatever happened) and disconnect."""
        self.resume()
        self.connection.close()


@dataclass
class Load:
    """What the users of one run share: the tally, the replay switch, the choices."""

    tally: Tally
    replay: Replay
    tenants: list[str]
    flows: dict[str, int]


class User:
    """One simulated user: a client with its own cookie jar, and a seeded schedule."""

    def __init__(
        self, name: str, client: httpx.AsyncClient, rng: random.Random, load: Load
    ) -> None:
        """A user named ``name`` (sent as a field) choosing its flows with ``rng``."""
        self.name = name
        self.client = client
        self.rng = rng
        self.load = load
        self.tally = load.tally

    async def request(
        self, method: str, path: str, database: str, fields: dict[str, str], tenant: str | None
    ) -> dict[str, Any] | None:
        """One request meant for ``database``; the answer's JSON, or ``None`` (counted).

        ``fields`` go in the query string of a GET, the form of a POST; ``tenant``, if
        any, in the ``X-Tenant`` header.
        """
        import httpx  # noqa: PLC0415

        tally = self.tally
        index = tally.issued
        tally.issued += 1
        if index == tally.pause_at:
            await asyncio.to_thread(self.load.replay.pause)
        elif index == tally.resume_at:
            await asyncio.to_thread(self.load.replay.resume)
        timed = index >= tally.warmup
        headers = {"X-Tenant": tenant} if tenant else {}
        get = method == "GET"
        started = time.perf_counter()
        if timed and tally.first_timed is None:
            tally.first_timed = started
        try:
            response = await self.client.request(
                method,
                path,
                params=fields if get else None,
                data=None if get else fields,
                headers=headers,
            )
        except httpx.HTTPError as error:
            tally.errors[type(error).__name__] += 1
            return None
        finally:
            ended = time.perf_counter()
            if timed:
                tally.latencies.append(ended - started)
                tally.last_timed = max(tally.last_timed, ended)
        if response.status_code != 200:
            tally.errors[f"HTTP {response.status_code}"] += 1
            return None
        answer: dict[str, Any] = response.json()
        if answer["marker"] != f"{PREFIX}{database}":
            tally.misroutes[f"{path} answered from {answer['marker']}"] += 1
        return answer

    async def flow(self) -> None:
        """One flow of requests, chosen at random (with the weights of FLOWS)."""
        flows = self.load.flows
        kind = self.rng.choices(list(flows), weights=list(flows.values()))[0]
        tenant = self.rng.choice(self.load.tenants)
        mine = {"user": self.name}
        if kind == "tenant read":
            await self.request("GET", "/tenant/read", tenant, mine, tenant)
            return
        if kind == "shared read":
            answer = await self.request("GET", "/shared/read", SHARED, mine, None)
            if answer is not None:
                self.tally.shared_reads += 1
                self.tally.on_standby += bool(answer["standby"])
            return
        where = "tenant" if kind == "tenant write" else "shared"
        database, named = (tenant, tenant) if where == "tenant" else (SHARED, None)
        token = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        note = {**mine, "token": token, "body": f"{kind} by {self.name}"}
        if await self.request("POST", f"/{where}/write", database, note, named) is None:
            return
        self.tally.written.setdefault(database, set()).add(token)
        if self.tally.issued >= self.tally.total:
            return
        answer = await self.request("GET", f"/{where}/note", database, {"token": token}, named)
        if answer is not None and answer["marker"] == f"{PREFIX}{database}" and not answer["found"]:
            self.tally.stale[where] += 1

    async def run(self) -> None:
        """Flows until the run's requests are sent."""
        while self.tally.issued < self.tally.total:
            await self.flow()


async def drive(url: str, options: argparse.Namespace, load: Load, round_number: int) -> None:
    """Run the users until the run's requests are sent."""
    import httpx  # noqa: PLC0415

    # No keep-alive: each request is accepted by whichever worker is free (see above).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    async with contextlib.AsyncExitStack() as stack:
        users = [
            User(
                f"u{number:02d}",
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, timeout=60, limits=limits)
                ),
                random.Random(f"{options.seed}/{round_number}/{number}"),  # noqa: S311 - a schedule
                load,
            )
            for number in range(options.users)
        ]
        await asyncio.gather(*(user.run() for user in users))


# One run, and the rounds.


@dataclass
class Result:
    """One run's figures."""

    server: str
    variant: str
    round_number: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    stale: int
    misroutes: int
    errors: int
    peak_primary: int
    peak_standby: int
    sessions: int
    on_standby: float | None
    evictions: int | None
    warnings: list[str]
    details: list[str]
    paused_seconds: float
    #: CPU time of the server's processes per request (warm-up included)
    cpu_ms: float


def quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Bench:
    """What every run uses: the options, the databases, a folder for the servers' files."""

    options: argparse.Namespace
    databases: Databases
    folder: Path


def run_one(kind: str, variant: Variant, round_number: int, bench: Bench) -> Result:
    """Serve one variant with one server, drive the load, check and count."""
    options, databases = bench.options, bench.databases
    print(f"round {round_number + 1}: {kind}, {variant.spec} ...", file=sys.stderr)
    databases.reset()
    sessions_before = databases.sessions()
    warmup = options.warmup
    timed = options.requests
    tally = Tally(
        total=warmup + timed,
        warmup=warmup,
        pause_at=warmup + timed // 3,
        resume_at=warmup + 2 * timed // 3,
    )
    folder = bench.folder / f"{round_number}-{kind}-{variant.spec}"
    server = Server(kind, variant, folder, options, databases.standby.port)
    poller = ConnectionPoller(databases.standby.port)
    replay = Replay(databases.standby.port)
    poller.start()
    peaks = (0, 0)
    cpu_ms = float("nan")
    try:
        server.start()
        server.wait_until_up()
        cpu_before = server.cpu_seconds()
        flows = {
            flow: weight
            for flow, weight in FLOWS.items()
            if options.mix == "all" or flow.startswith("tenant")
        }
        load = Load(tally, replay, databases.tenants, flows)
        asyncio.run(drive(server.url, options, load, round_number))
        cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / tally.total
    finally:
        replay.close()
        server.stop()
        peaks = poller.stop()
    tally.paused_seconds = replay.paused_seconds
    time.sleep(1)  # the last sessions' statistics reach pg_stat_database
    sessions = databases.sessions() - sessions_before
    databases.wait_for_replay()
    misplaced, lost = check_rows(databases, tally)
    warnings, causes = server.log()
    details = [f"{count} x {text}" for text, count in tally.misroutes.most_common(3)]
    if misplaced:
        details.append(f"{misplaced} rows in a database other than their request's")
    if lost:
        details.append(f"{lost} acknowledged writes found in no database")
    details += [f"client: {count} x {text}" for text, count in tally.errors.most_common(3)]
    details += [f"server log: {count} x {text}" for text, count in causes.most_common(3)]
    if tally.stale:
        details.append(
            "stale: "
            + ", ".join(f"{count} {where}" for where, count in sorted(tally.stale.items()))
        )
    elapsed = tally.last_timed - (tally.first_timed or tally.last_timed)
    counted = variant.counted
    return Result(
        server=kind,
        variant=variant.spec,
        round_number=round_number,
        requests_per_second=len(tally.latencies) / elapsed if elapsed else float("nan"),
        p50_ms=quantile(tally.latencies, 0.50) * 1000,
        p99_ms=quantile(tally.latencies, 0.99) * 1000,
        stale=sum(tally.stale.values()),
        misroutes=sum(tally.misroutes.values()) + misplaced + lost,
        errors=sum(tally.errors.values()),
        peak_primary=peaks[0],
        peak_standby=peaks[1],
        sessions=sessions,
        on_standby=tally.on_standby / tally.shared_reads if tally.shared_reads else None,
        evictions=server.count("closed-eviction") if counted else None,
        warnings=warnings,
        details=details,
        paused_seconds=tally.paused_seconds,
        cpu_ms=cpu_ms,
    )


def check_rows(databases: Databases, tally: Tally) -> tuple[int, int]:
    """Rows in a database their request did not name, and acknowledged writes not found."""
    misplaced = 0
    seen: set[str] = set()
    for database, rows in databases.notes().items():
        for named, token in rows:
            seen.add(token)
            misplaced += named != database
    lost = sum(len(tokens - seen) for tokens in tally.written.values())
    return misplaced, lost


# The report.


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(results: list[Result], options: argparse.Namespace) -> list[str]:
    """One markdown table: a row per server and variant, medians and totals over rounds."""
    lines = [
        (
            "| server | variant | requests/s | x plain | server CPU / request | p50 | p99 "
            "| stale reads | misroutes "
            "| errors | peak connections (primary / standby) | connections opened "
            "| shared reads on standby | evictions | dynroute WARNINGs |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for kind in options.servers:
        for spec in options.variants:
            runs = [r for r in results if r.server == kind and r.variant == spec]
            if not runs:
                continue
            variant = Variant(spec)
            ratios = [
                run.requests_per_second / base.requests_per_second
                for run in runs
                for base in results
                if base.server == kind
                and base.variant == "plain"
                and base.round_number == run.round_number
            ]
            ratio = ""
            if spec != "plain" and ratios:
                ratio = f"{median(ratios):.2f}x"
                if len(ratios) > 1:
                    ratio += f" ({min(ratios):.2f} to {max(ratios):.2f})"
            standby = [r.on_standby for r in runs if r.on_standby is not None]
            evictions = [float(r.evictions) for r in runs if r.evictions is not None]
            warnings = [w for r in runs for w in r.warnings]
            cells = [
                kind,
                variant.label,
                f"{median([r.requests_per_second for r in runs]):,.0f}",
                ratio,
                f"{median([r.cpu_ms for r in runs]):.2f} ms",
                f"{median([r.p50_ms for r in runs]):.1f} ms",
                f"{median([r.p99_ms for r in runs]):.0f} ms",
                str(sum(r.stale for r in runs)),
                str(sum(r.misroutes for r in runs)),
                str(sum(r.errors for r in runs)),
                (
                    f"{median([float(r.peak_primary) for r in runs]):.0f} / "
                    f"{median([float(r.peak_standby) for r in runs]):.0f}"
                ),
                f"{median([float(r.sessions) for r in runs]):,.0f}",
                f"{median(standby):.0%}" if standby else "",
                f"{median(evictions):,.0f}" if evictions else "",
                str(len(warnings)) if variant.name == "dynroute" else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
            details = [detail for r in runs for detail in r.details]
            if warnings:
                details.append(f"first WARNING: `{warnings[0][:400]}`")
            if details:
                notes.append(f"- {kind}, {variant.label}: " + "; ".join(details))
    if notes:
        lines += ["", *notes]
    return lines


def goals(results: list[Result], options: argparse.Namespace) -> list[str]:
    """Issue 20's goals for the load benchmark, each with its figure and whether it holds."""
    lines: list[str] = []
    for kind in options.servers:

        def runs(spec: str, kind: str = kind) -> list[Result]:
            return [r for r in results if r.server == kind and r.variant == spec]

        plain = runs("plain")
        for spec in options.variants:
            variant, mine = Variant(spec), runs(spec)
            if variant.name != "dynroute" or not mine:
                continue
            if variant.max_idle is not None:
                warned = sum(len(r.warnings) for r in mine)
                evicted = [float(r.evictions) for r in mine if r.evictions is not None]
                lines.append(
                    f"- {kind}, {variant.label}: {warned} WARNING lines"
                    + (f", {median(evicted):,.0f} evictions a run" if evicted else "")
                    + " (a bound too low should warn)"
                )
                continue
            if plain:
                ratio = median(
                    [
                        run.requests_per_second / base.requests_per_second
                        for run in mine
                        for base in plain
                        if base.round_number == run.round_number
                    ]
                )
                status = "met" if ratio >= 0.95 else "NOT MET"
                lines.append(
                    f"- {kind}, {variant.label}, mix {options.mix}: throughput / plain Django's "
                    f"{ratio:.2f}x, {status} (goal ≥ 0.95x)"
                )
            bad = {
                "stale reads": sum(r.stale for r in mine),
                "misroutes": sum(r.misroutes for r in mine),
                "errors": sum(r.errors for r in mine),
                "WARNINGs": sum(len(r.warnings) for r in mine),
            }
            status = "met" if not any(bad.values()) else "NOT MET"
            figures = ", ".join(f"{count} {name}" for name, count in bad.items())
            lines.append(f"- {kind}, {variant.label}: {figures}, {status} (goal: 0 of each)")
    return lines


def report(results: list[Result], options: argparse.Namespace, limit: int) -> str:
    import django  # noqa: PLC0415

    now = dt.datetime.now(dt.timezone.utc)
    command = "python3 bench/load.py " + " ".join(sys.argv[1:])
    paused = median([r.paused_seconds for r in results])
    header = [
        (
            f"Command: `{command.strip()}`, run {now:%Y-%m-%d %H:%M} UTC "
            f"({options.rounds} round{'s' if options.rounds > 1 else ''})."
        ),
        (
            f"Python {platform.python_version()}, Django {django.get_version()}, "
            f"{package_versions()}; {platform.machine()}, {os.cpu_count()} CPUs, "
            f"{platform.system()} {platform.release()}."
        ),
        (
            f"PostgreSQL {server_version()} on the same machine, a streaming standby of it, "
            f"{options.tenants} tenant databases; the servers' role may open {limit} "
            f"connections. gunicorn `--workers {options.workers} --threads {options.threads}`, "
            f"uvicorn `--workers {options.workers}`; `CONN_MAX_AGE` "
            f"{conn_max_age(options, 'gunicorn')} under gunicorn, "
            f"{conn_max_age(options, 'uvicorn')} under uvicorn; {options.users} users, "
            f"{options.requests:,} timed requests a run after {options.warmup} of warm-up, "
            f"mix: {options.mix}; replay paused for a third of each run (median {paused:.1f} s)."
        ),
    ]
    verdicts = goals(results, options)
    return "\n".join(
        [
            *header,
            "",
            *table(results, options),
            *(["", "Goals:", "", *verdicts] if verdicts else []),
        ]
    )


def package_versions() -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return ", ".join(
        f"{name} {version(name)}"
        for name in ("gunicorn", "uvicorn", "httpx", "psycopg", "django-multidb-router")
    )


def server_version() -> str:
    with admin() as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# The command.


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, 1 round")
    parser.add_argument("--requests", type=int, default=6000, help="timed requests a run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--users", type=int, default=16, help="concurrent users")
    parser.add_argument("--tenants", type=int, default=20, help="tenant databases")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument(
        "--conn-max-age",
        type=int,
        help="CONN_MAX_AGE of every database (default: 60 under gunicorn, 0 under uvicorn)",
    )
    parser.add_argument(
        "--connection-limit",
        type=int,
        help="connections the servers' role may open (default: the server's max_connections "
        "less the superuser's reserve, less 10 for the server's other users)",
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="gunicorn,uvicorn")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="plain, dynroute, dynroute@N (DYNROUTE_MAX_IDLE_CONNECTIONS=N), multidb",
    )
    parser.add_argument("--mix", choices=("all", "tenant"), default="all")
    parser.add_argument("--seed", default="dynroute", help="seed of the users' schedules")
    parser.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.md's section")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help=argparse.SUPPRESS
    )
    parser.add_argument("--fresh", action="store_true", help="recreate bench/.venv-load")
    options = parser.parse_args()
    if options.quick:
        options.requests, options.warmup, options.rounds = 600, 50, 1
        if options.write:
            parser.error("--quick writes nothing: leave out --write")
    options.servers = [s for s in options.servers.split(",") if s]
    options.variants = [v for v in options.variants.split(",") if v]
    for kind in options.servers:
        if kind not in SERVERS:
            parser.error(f"unknown server {kind!r}: gunicorn or uvicorn")
    for spec in options.variants:
        if not re.fullmatch(r"plain|multidb|dynroute(@\d+)?(/bare)?", spec):
            parser.error(
                f"unknown variant {spec!r}: plain, multidb, dynroute, dynroute@N, "
                "dynroute/bare or dynroute@N/bare"
            )
    return options


def interrupted(number: int, _frame: object) -> None:
    """Turn SIGTERM (a shell's or a CI's kill) into KeyboardInterrupt: the same clean-up."""
    raise KeyboardInterrupt(signal.Signals(number).name)


def main() -> int:
    options = arguments()
    if not in_venv():
        ensure_venv(fresh=options.fresh)
        python = str(venv_python())
        os.execv(python, [python, __file__, *sys.argv[1:]])  # noqa: S606 - this script, in the venv
    # SIGTERM (a CI's or a shell's kill) cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupted)
    databases = Databases([f"t{number:02d}" for number in range(options.tenants)])
    results: list[Result] = []
    folder = Path(tempfile.mkdtemp(prefix="dynroute-load-"))
    try:
        print("creating the databases and the standby ...", file=sys.stderr)
        limit = databases.create(options.connection_limit)
        databases.start_standby()
        for round_number in range(options.rounds):
            shift = round_number % len(options.variants)
            order = options.variants[shift:] + options.variants[:shift]
            bench = Bench(options, databases, folder)
            for kind in options.servers:
                results.extend(run_one(kind, Variant(spec), round_number, bench) for spec in order)
        text = report(results, options, limit)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        print("dropping the standby and the databases ...", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            databases.drop()
        shutil.rmtree(folder, ignore_errors=True)
    print(text)
    if options.write:
        title = "### Load: real servers, PostgreSQL, 16 users"
        write_script_section(options.output, "load.py", title, text)
        print(f"written to {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
