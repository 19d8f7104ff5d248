"""Measure dynroute's primary/replica routing and django-multidb-router 0.11 side by side.

``bench/run.py`` runs this inside ``bench/.venv-multidb``, where django-multidb-router
0.11 (module ``multidb``) comes from PyPI and dynroute is installed editable from this
checkout. Both run in one process, on the same Django and the same databases,
alternating round by round. Each variant installs its own router in
``django.db.router`` before it runs, as ``DATABASE_ROUTERS`` would. Django is set up
once a process, so each part runs in a process of its own.

``--part decisions`` (the default): SQLite files ``default`` (the primary),
``replica1`` and ``replica2``; CPU time on one CPU, as in measure.py.

- ``replica_decision``: ``router.db_for_read(Item)`` + ``router.db_for_write(Item)``
  through Django's ``ConnectionRouter``, reads not pinned: dynroute inside a
  ``PrimaryReplica(pin_after_write=False)`` block entered once around the loop;
  multidb's ``PinningReplicaRouter`` with the thread not pinned.
- ``replica_decision_pinned``: the same, with reads pinned to the primary: dynroute's
  block with ``pin_after_write=True`` after one write; multidb's thread pinned with
  ``pin_this_thread()`` (what its middleware does for a request that writes).

``--count MEASURE/VARIANT N`` runs one variant of that part N times without timing,
for instruction counts under callgrind (run.py, hot_path.py). Besides the decisions it
has requests on those SQLite files, counted by bench/hot_path.py and timed by no one:
``request_get``, ``request_get_pinned`` and ``request_post``, variants ``{impl}_none``
(``MIDDLEWARE`` empty) and ``{impl}_middleware`` (only the library's middleware).

``--part requests``: the real PostgreSQL server (127.0.0.1:5432, user ``postgres``) as
``default`` and, as ``replica1``, a streaming standby of it that this script starts
with ``tests/standby.py``; both on a database it creates, ``dynroute_bench_replicas``.
The standby is stopped and removed and the database dropped when it ends, on an error
too. One request through ``django.test.Client`` with only the library's middleware
and its router; wall-clock time of the whole request. Three variants, timed in the same
rounds: ``dynroute`` (``DYNROUTE_PRIMARY_REPLICA`` without ``"pin"``: pin by position,
the default), ``dynroute_time`` (the same setting with ``"pin": "time"``, installed
with ``override_settings`` while that variant's client builds its middleware chain,
when the middleware reads it) and ``multidb``:

- ``pg_get``: a fresh visitor (no cookie) GETs a view that reads one count.
- ``pg_post``: a fresh visitor POSTs to a view that saves one row.
- ``pg_get_after_post``: a fresh visitor POSTs (not timed), then at once GETs with the
  cookies that POST got (timed).
- ``pg_get_caught_up``: the same, except that between the two the script waits (not
  timed) until the standby has replayed up to the primary's
  ``pg_current_wal_insert_lsn()``, read just after the POST.
- ``pg_round_trip``: no request, the floor of "one query more": ``SELECT 1`` through a
  Django cursor (the execute wrapper below included), variants ``primary`` and
  ``standby``, timed the same way.

Connections persist across requests for both libraries: ``CONN_MAX_AGE`` is ``None``
and ``django.test.Client`` keeps ``close_old_connections`` off ``request_started``
and ``request_finished``. An execute wrapper on both connections records, for each
timed request, which database answered the view's query and which queries the
library made itself (through Django's cursors), with the server process of each.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import django  # noqa: E402 - after sys.path is set
from django.conf import settings  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from django.test import Client

PRIMARY, REPLICAS = "default", ("replica1", "replica2")
#: Items in each database: a read's count shows which database answered.
COUNTS = {"default": 3, "replica1": 5, "replica2": 7}
#: The pin window of both middlewares: long enough that a pin cookie made when the
#: process starts is still valid at its end (checking it costs the same either way).
PIN_SECONDS = 3600
IMPLS = ("dynroute", "multidb")
MIDDLEWARE = {
    "dynroute": "dynroute.middleware.PrimaryReplicaMiddleware",
    "multidb": "multidb.middleware.PinningRouterMiddleware",
}
ROUTERS = {"dynroute": "dynroute.DynamicDbRouter", "multidb": "multidb.PinningReplicaRouter"}


def setup(folder: Path) -> None:
    """Configure Django, create and seed the three SQLite databases."""

    def sqlite(name: str) -> dict[str, Any]:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / f"{name}.sqlite3")}

    settings.configure(
        DEBUG=False,
        SECRET_KEY="dynroute-bench-not-secret",  # noqa: S106 - signs the bench's pin cookies
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="benchapp.urls",
        DATABASES={alias: sqlite(alias) for alias in COUNTS},
        # Each variant sets router.routers to its own router.
        DATABASE_ROUTERS=[ROUTERS["dynroute"]],
        MIDDLEWARE=[],
        INSTALLED_APPS=["benchapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DYNROUTE_PRIMARY_REPLICA={
            "primary": PRIMARY,
            "replicas": list(REPLICAS),
            "pin_seconds": PIN_SECONDS,
        },
        REPLICA_DATABASES=list(REPLICAS),
        MULTIDB_PINNING_SECONDS=PIN_SECONDS,
    )
    django.setup()
    from benchapp.models import Item, Note  # noqa: PLC0415 - after setup()
    from django.db import connections  # noqa: PLC0415
    from django.db.backends.signals import connection_created  # noqa: PLC0415

    def no_sync(connection: Any, **_: Any) -> None:  # noqa: ANN401 - Django's signal
        # A POST commits one row: without this, each commit waits for the disk.
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous = OFF")
                cursor.execute("PRAGMA journal_mode = MEMORY")

    connection_created.connect(no_sync, weak=False)
    for alias, count in COUNTS.items():
        with connections[alias].schema_editor() as editor:  # lighter than migrate
            editor.create_model(Item)
            editor.create_model(Note)
        Item.objects.using(alias).bulk_create(Item(name=alias) for _ in range(count))


def libraries() -> dict[str, Any]:
    """Check that both libraries come from where they should; return a router of each."""
    import multidb  # noqa: PLC0415 - after setup()

    import dynroute  # noqa: PLC0415

    if str(ROOT / "src") not in (dynroute.__file__ or "") or "site-packages" not in (
        multidb.__file__ or ""
    ):
        msg = f"wrong modules loaded: {dynroute.__file__}, {multidb.__file__}"
        raise RuntimeError(msg)
    if multidb.__version__ != "0.11.0":
        msg = f"django-multidb-router {multidb.__version__} loaded, 0.11 expected"
        raise RuntimeError(msg)
    return {"dynroute": dynroute.DynamicDbRouter(), "multidb": multidb.PinningReplicaRouter()}


def use_router(routers: dict[str, Any], impl: str) -> None:
    """Install the library's router, as ``DATABASE_ROUTERS`` would."""
    from django.db import router  # noqa: PLC0415
    from multidb.pinning import unpin_this_thread  # noqa: PLC0415

    router.routers = [routers[impl]]
    if impl == "multidb":
        # Its middleware leaves the thread pinned after a request that wrote.
        unpin_this_thread()


def make_client(routers: dict[str, Any], impl: str, *, middleware: bool) -> Client:
    """A test client whose handler has the middleware chain built (settings read now)."""
    from django.test import Client  # noqa: PLC0415

    settings.MIDDLEWARE = [MIDDLEWARE[impl]] if middleware else []
    use_router(routers, impl)
    made = Client()
    made.handler.load_middleware()
    settings.MIDDLEWARE = []
    return made


def build_variants() -> dict[str, dict[str, Callable[[int], object]]]:  # noqa: C901 - one place lists every variant
    """Every loop of the SQLite part, by measure and variant."""
    from benchapp.models import Item  # noqa: PLC0415 - after setup()
    from django.db import router  # noqa: PLC0415
    from multidb.pinning import pin_this_thread, unpin_this_thread  # noqa: PLC0415

    import dynroute  # noqa: PLC0415

    routers = libraries()

    def decision(impl: str, *, pinned: bool) -> Callable[[int], object]:
        db_for_read, db_for_write = router.db_for_read, router.db_for_write
        if impl == "multidb":

            def run_multidb(n: int) -> object:
                use_router(routers, impl)
                if pinned:
                    pin_this_thread()
                read = None
                try:
                    for _ in range(n):
                        read = db_for_read(Item)
                        db_for_write(Item)
                finally:
                    unpin_this_thread()
                return read

            return run_multidb
        policy = dynroute.PrimaryReplica(PRIMARY, REPLICAS, pin_after_write=pinned)
        block = dynroute.in_database(policy=policy)

        def run_dynroute(n: int) -> object:
            use_router(routers, impl)
            read = None
            with block:
                if pinned:
                    # A write (an UPDATE of no row): the reads below follow it, pinned.
                    Item.objects.filter(pk=-1).update(name="")
                    if db_for_read(Item) != PRIMARY:
                        msg = "dynroute's reads are not pinned after a write"
                        raise RuntimeError(msg)
                for _ in range(n):
                    read = db_for_read(Item)
                    db_for_write(Item)
            return read

        return run_dynroute

    def pin_cookie(impl: str) -> Any:  # noqa: ANN401 - http.cookies.SimpleCookie
        """The cookie a POST through the library's middleware sets."""
        poster = make_client(routers, impl, middleware=True)
        poster.post("/write/")
        if not poster.cookies:
            msg = f"{impl}'s middleware set no pin cookie after a POST"
            raise RuntimeError(msg)
        return poster.cookies

    def requests(
        impl: str, method: str, *, middleware: bool, pinned: bool = False
    ) -> Callable[[int], object]:
        made = make_client(routers, impl, middleware=middleware)
        cookies = pin_cookie(impl) if pinned else None
        send = made.post if method == "POST" else made.get
        path = "/write/" if method == "POST" else "/read/"
        jar = made.cookies

        def run(n: int) -> object:
            use_router(routers, impl)
            body = b""
            for _ in range(n):
                # A fresh visitor each time, or one holding the pin cookie.
                jar.clear()
                if cookies is not None:
                    jar.update(cookies)
                body = send(path).content
            return body.decode()

        return run

    variants: dict[str, dict[str, Callable[[int], object]]] = {
        "replica_decision": {impl: decision(impl, pinned=False) for impl in IMPLS},
        "replica_decision_pinned": {impl: decision(impl, pinned=True) for impl in IMPLS},
    }
    # Counted only (--count), by bench/hot_path.py: the timed requests are on PostgreSQL.
    for name, method, pinned in (
        ("request_get", "GET", False),
        ("request_get_pinned", "GET", True),
        ("request_post", "POST", False),
    ):
        variants[name] = {
            f"{impl}_{kind}": requests(impl, method, middleware=kind == "middleware", pinned=pinned)
            for impl in IMPLS
            for kind in ("none", "middleware")
        }
    return variants


#: Where each timed variant of the SQLite part must have read: the alias.
EXPECTED: dict[str, dict[str, set[str]]] = {
    "replica_decision": {"dynroute": set(REPLICAS), "multidb": set(REPLICAS)},
    "replica_decision_pinned": {"dynroute": {PRIMARY}, "multidb": {PRIMARY}},
}

# measure -> (operations per sample, rounds)
PLAN = {
    "replica_decision": (2000, 201),
    "replica_decision_pinned": (2000, 201),
}


def compare(
    variants: dict[str, Callable[[int], object]], n: int, rounds: int
) -> dict[str, list[float]]:
    """Time each variant ``rounds`` times, interleaved, rotating the order.

    The garbage collector is off while a round runs and collects before each round, so
    that no round pays for the garbage of another (a request leaves reference cycles).
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        variants[name](max(1, n // 10))  # warm up
    clock = time.process_time_ns
    try:
        for round_index in range(rounds):
            gc.collect()
            gc.disable()
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                start = clock()
                variants[name](n)
                samples[name].append((clock() - start) / n)
            gc.enable()
    finally:
        gc.enable()
    return samples


def run_decisions(*, quick: bool, count: list[str] | None) -> dict[str, Any]:
    """The SQLite part: time the decisions (or run one variant for --count)."""
    from measure import pin_to_one_cpu, summary  # noqa: PLC0415 - shares measure.py's helpers

    pin_to_one_cpu()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dynroute-bench-replicas-") as folder:
        setup(Path(folder))
        variants = build_variants()
        if count:
            measure, variant = count[0].split("/")
            variants[measure][variant](int(count[1]))
            return results
        for measure, (operations, repeats) in PLAN.items():
            loops = variants[measure]
            n, rounds = (max(1, operations // 10), 3) if quick else (operations, repeats)
            answers = {name: run(1) for name, run in loops.items()}
            samples = compare(loops, n, rounds)
            results[measure] = {
                "clock": "cpu",
                "operations": n,
                "rounds": rounds,
                "variants": {
                    name: {
                        **summary(values),
                        "samples_ns": values,
                        "answer": answers[name],
                        "right_database": answers[name] in EXPECTED[measure][name],
                    }
                    for name, values in samples.items()
                },
            }
    return results


# The PostgreSQL part.

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
#: The database this script creates on the primary (the standby gets it by replication).
DATABASE = "dynroute_bench_replicas"
STANDBY = "replica1"
#: The pin window of both middlewares on PostgreSQL.
PG_PIN_SECONDS = 60
#: ``settings.DYNROUTE_PRIMARY_REPLICA`` on PostgreSQL: no ``"pin"``, the default (position).
DYNROUTE_SETTING = {"primary": PRIMARY, "replicas": [STANDBY], "pin_seconds": PG_PIN_SECONDS}
#: The same, pinning by time (the primary for ``pin_seconds``, no position read).
DYNROUTE_TIME_SETTING = {**DYNROUTE_SETTING, "pin": "time"}
#: The request variants: the library each runs and, for dynroute, the setting its
#: middleware reads (``None``: the one ``settings.configure`` set).
PG_VARIANTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "dynroute": ("dynroute", None),
    "dynroute_time": ("dynroute", DYNROUTE_TIME_SETTING),
    "multidb": ("multidb", None),
}
#: The pin mode each dynroute variant's middleware must have read.
PG_PIN_MODES = {"dynroute": "position", "dynroute_time": "time"}
#: ``CONN_MAX_AGE`` of both aliases: a connection is kept for the whole process.
CONN_MAX_AGE = None
#: measure -> (method, what comes before the timed request)
PG_ROWS = {
    "pg_get": ("GET", "fresh"),
    "pg_post": ("POST", "fresh"),
    "pg_get_after_post": ("GET", "after_post"),
    "pg_get_caught_up": ("GET", "caught_up"),
}
#: The floor row: ``SELECT 1`` through a Django cursor, on each server.
ROUND_TRIP = "pg_round_trip"
#: Which databases the view's query of each row may have gone to, by variant.
PG_EXPECTED: dict[str, dict[str, set[str]]] = {
    "pg_get": {"dynroute": {STANDBY}, "dynroute_time": {STANDBY}, "multidb": {STANDBY}},
    "pg_post": {"dynroute": {PRIMARY}, "dynroute_time": {PRIMARY}, "multidb": {PRIMARY}},
    # dynroute by position: the standby if it has replayed the POST already, else the
    # primary.
    "pg_get_after_post": {
        "dynroute": {PRIMARY, STANDBY},
        "dynroute_time": {PRIMARY},
        "multidb": {PRIMARY},
    },
    # Pinned by time (multidb, dynroute_time): the primary for the pin window,
    # replayed or not.
    "pg_get_caught_up": {
        "dynroute": {STANDBY},
        "dynroute_time": {PRIMARY},
        "multidb": {PRIMARY},
    },
    ROUND_TRIP: {"primary": {PRIMARY}, "standby": {STANDBY}},
}
#: (requests per sample, rounds); --quick: (2, 3).
PG_PLAN = (20, 51)
#: The view's tables: a query naming one is the view's, any other the library's.
VIEW_TABLES = ('"benchapp_item"', '"benchapp_note"')


def admin(port: int = PORT) -> Any:  # noqa: ANN401 - psycopg.Connection
    """A superuser connection in autocommit to the ``postgres`` database of a server."""
    import psycopg  # noqa: PLC0415 - only this part needs it

    return psycopg.connect(
        host=HOST, port=port, user=USER, dbname="postgres", autocommit=True, connect_timeout=10
    )


class UnavailableError(Exception):
    """No PostgreSQL server to measure on, or no standby of it could be started."""


def _terminate(*_: object) -> NoReturn:
    raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def servers() -> Iterator[tuple[Any, Any, int]]:
    """Create the database on the primary and start the standby; undo both at the end.

    Yields a superuser connection to the primary, one to the standby, and the standby's
    port. The standby is stopped and deleted, its replication slot and the database
    dropped, however the block ends (a SIGTERM too).
    """
    sys.path.insert(0, str(ROOT))
    import psycopg  # noqa: PLC0415 - only this part needs it
    from tests import standby as helper  # noqa: PLC0415 - the repository's fixture

    signal.signal(signal.SIGTERM, _terminate)
    try:
        connection = admin()
    except psycopg.OperationalError as error:
        msg = f"no PostgreSQL server at {HOST}:{PORT} ({' '.join(str(error).split())})"
        raise UnavailableError(msg) from None
    with connection as primary:
        # A run that died may have left it.
        primary.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        primary.execute(f"CREATE DATABASE {DATABASE}")
        started = None
        try:
            try:
                started = helper.start({"HOST": HOST, "PORT": PORT, "USER": USER}, primary.cursor())
            except helper.StandbyError as error:
                msg = f"no standby could be started: {error}"
                raise UnavailableError(msg) from None
            with admin(started.port) as standby:
                yield primary, standby, started.port
        finally:
            try:
                if settings.configured:
                    from django.db import connections  # noqa: PLC0415

                    connections.close_all()
            finally:
                try:
                    if started is not None:
                        started.remove(primary.cursor())
                finally:
                    primary.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def wait_for_replay(primary: Any, standby: Any, *, seconds: float = 60) -> int:  # noqa: ANN401
    """Wait until the standby has replayed the primary's WAL written so far; return the ns."""
    start = time.perf_counter_ns()
    lsn = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    deadline = time.monotonic() + seconds
    query = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
    while not standby.execute(query, [lsn]).fetchone()[0]:
        if time.monotonic() > deadline:
            msg = f"the standby did not replay up to {lsn} in {seconds} s"
            raise RuntimeError(msg)
        time.sleep(0.0005)
    return time.perf_counter_ns() - start


def setup_postgres(primary: Any, standby: Any, standby_port: int) -> None:  # noqa: ANN401
    """Configure Django on the primary and the standby; create the tables, seed them."""

    def postgresql(port: int) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DATABASE,
            "HOST": HOST,
            "PORT": port,
            "USER": USER,
            "CONN_MAX_AGE": CONN_MAX_AGE,
        }

    settings.configure(
        DEBUG=False,
        SECRET_KEY="dynroute-bench-not-secret",  # noqa: S106 - signs the bench's pin cookies
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="benchapp.urls",
        DATABASES={PRIMARY: postgresql(PORT), STANDBY: postgresql(standby_port)},
        # Each variant sets router.routers to its own router.
        DATABASE_ROUTERS=[ROUTERS["dynroute"]],
        MIDDLEWARE=[],
        INSTALLED_APPS=["benchapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DYNROUTE_PRIMARY_REPLICA=DYNROUTE_SETTING,
        REPLICA_DATABASES=[STANDBY],
        MULTIDB_PINNING_SECONDS=PG_PIN_SECONDS,
    )
    django.setup()
    from benchapp.models import Item, Note  # noqa: PLC0415 - after setup()
    from django.db import connections  # noqa: PLC0415

    with connections[PRIMARY].schema_editor() as editor:  # lighter than migrate
        editor.create_model(Item)
        editor.create_model(Note)
    Item.objects.using(PRIMARY).bulk_create(Item(name=PRIMARY) for _ in range(COUNTS[PRIMARY]))
    wait_for_replay(primary, standby)


class Recorder:
    """An execute wrapper: the alias, the DB-API connection and the SQL of each query."""

    def __init__(self) -> None:
        """Record nothing yet."""
        self.seen: list[tuple[str, Any, str]] = []

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,  # noqa: ANN401
        many: bool,  # noqa: FBT001
        context: dict[str, Any],
    ) -> Any:  # noqa: ANN401
        """Note the query, run it."""
        connection = context["connection"]
        self.seen.append((connection.alias, connection.connection, sql))
        return execute(sql, params, many, context)


@dataclass
class Tally:
    """Where the timed requests of one variant went, added up."""

    requests: int = 0
    view: Counter[str] = field(default_factory=Counter)
    library: Counter[str] = field(default_factory=Counter)
    library_sql: dict[str, None] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)
    waits_ns: list[int] = field(default_factory=list)

    def add(self, seen: list[tuple[str, Any, str]], *, bare: bool = False) -> None:
        """Add one request's queries (``bare``: one query timed alone, all of it "the view's")."""
        self.requests += 1

        def views(sql: str) -> bool:
            return bare or any(table in sql for table in VIEW_TABLES)

        found = [alias for alias, _, sql in seen if views(sql)]
        self.view[found[0] if len(found) == 1 else f"{len(found)} queries"] += 1
        for alias, connection, sql in seen:
            self.pids.setdefault(alias, set()).add(connection.info.backend_pid)
            if not views(sql):
                self.library[alias] += 1
                if len(self.library_sql) < 8:
                    self.library_sql[" ".join(sql.split())[:160]] = None

    def report(self, expected: set[str]) -> dict[str, Any]:
        """The tally as JSON, with the answer and whether it was right."""
        return {
            "requests": self.requests,
            "reads": dict(self.view),
            "library_queries": {
                alias: count / self.requests for alias, count in self.library.items()
            },
            "library_sql": list(self.library_sql),
            "pids": {alias: sorted(pids) for alias, pids in self.pids.items()},
            "replay_wait_ns": statistics.median(self.waits_ns) if self.waits_ns else None,
            "answer": ", ".join(f"{alias} {count}" for alias, count in sorted(self.view.items())),
            "expected": sorted(expected),
            "right_database": bool(self.view) and set(self.view) <= expected,
        }


def variant_client(routers: dict[str, Any], variant: str) -> Client:
    """A test client whose middleware chain was built with the variant's settings."""
    from django.test import override_settings  # noqa: PLC0415 - after setup()

    from dynroute.middleware import PrimaryReplicaSettings  # noqa: PLC0415

    impl, setting = PG_VARIANTS[variant]
    if setting is None:
        override: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    else:
        override = override_settings(DYNROUTE_PRIMARY_REPLICA=setting)
    with override:
        # The middleware reads DYNROUTE_PRIMARY_REPLICA here, once; it keeps what it read.
        made = make_client(routers, impl, middleware=True)
        if variant in PG_PIN_MODES:
            mode = PrimaryReplicaSettings.from_settings().policy.pin
            if mode != PG_PIN_MODES[variant]:
                msg = f"{variant}: the middleware pins by {mode}, not {PG_PIN_MODES[variant]}"
                raise RuntimeError(msg)
    return made


def round_trip(alias: str, recorder: Recorder) -> Callable[[int, Tally], list[int]]:
    """``SELECT 1`` through a Django cursor of ``alias``: one round trip, as a library's query."""
    from django.db import connections  # noqa: PLC0415 - after setup()

    connection = connections[alias]
    clock = time.perf_counter_ns

    def run(n: int, tally: Tally) -> list[int]:
        times = []
        for _ in range(n):
            recorder.seen.clear()
            start = clock()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            times.append(clock() - start)
            tally.add(recorder.seen, bare=True)
            recorder.seen.clear()
        return times

    return run


def build_requests(
    primary: Any,  # noqa: ANN401 - psycopg connections
    standby: Any,  # noqa: ANN401
    recorder: Recorder,
) -> dict[str, dict[str, Callable[[int, Tally], list[int]]]]:
    """Every loop of the PostgreSQL part, by measure and variant: each returns ns a request."""
    from django.db import connections  # noqa: PLC0415 - after setup()

    routers = libraries()
    for alias in (PRIMARY, STANDBY):
        connections[alias].execute_wrappers.append(recorder)

    def loop(variant: str, method: str, before: str) -> Callable[[int, Tally], list[int]]:
        impl = PG_VARIANTS[variant][0]
        made = variant_client(routers, variant)
        send = made.post if method == "POST" else made.get
        path = "/write/" if method == "POST" else "/read/"
        jar = made.cookies
        clock = time.perf_counter_ns

        def run(n: int, tally: Tally) -> list[int]:
            use_router(routers, impl)
            times = []
            for _ in range(n):
                jar.clear()  # a fresh visitor
                if before != "fresh":
                    made.post("/write/")  # the client keeps the cookies it set
                    if not jar:
                        msg = f"{variant}'s middleware set no cookie after a POST"
                        raise RuntimeError(msg)
                    if before == "caught_up":
                        tally.waits_ns.append(wait_for_replay(primary, standby))
                recorder.seen.clear()
                start = clock()
                response = send(path)
                times.append(clock() - start)
                if response.status_code != 200:
                    msg = f"{variant}: {method} {path} answered {response.status_code}"
                    raise RuntimeError(msg)
                tally.add(recorder.seen)
                recorder.seen.clear()
            return times

        return run

    loops = {
        measure: {variant: loop(variant, method, before) for variant in PG_VARIANTS}
        for measure, (method, before) in PG_ROWS.items()
    }
    loops[ROUND_TRIP] = {
        "primary": round_trip(PRIMARY, recorder),
        "standby": round_trip(STANDBY, recorder),
    }
    return loops


def compare_requests(
    loops: dict[str, Callable[[int, Tally], list[int]]], n: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, Tally]]:
    """Run each variant's ``n`` requests ``rounds`` times, interleaved, rotating the order.

    A round's sample is the mean wall-clock time of its requests. The garbage collector
    is off while a round runs and collects before each round, as in :func:`compare`.
    """
    names = list(loops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    tallies = {name: Tally() for name in names}
    for name in names:
        loops[name](2, Tally())  # warm up
    try:
        for round_index in range(rounds):
            gc.collect()
            gc.disable()
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                samples[name].append(statistics.fmean(loops[name](n, tallies[name])))
            gc.enable()
    finally:
        gc.enable()
    return samples, tallies


def sessions(connection: Any) -> int:  # noqa: ANN401 - psycopg.Connection
    """Client sessions open on the benchmark's database of that server."""
    row = connection.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND backend_type = 'client backend'",
        [DATABASE],
    ).fetchone()
    return int(row[0])


def run_requests(*, quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PostgreSQL part: results and what it ran on."""
    from measure import summary  # noqa: PLC0415 - shares measure.py's helpers

    n, rounds = (2, 3) if quick else PG_PLAN
    results: dict[str, Any] = {}
    with servers() as (primary, standby, standby_port):
        setup_postgres(primary, standby, standby_port)
        recorder = Recorder()
        loops = build_requests(primary, standby, recorder)
        for measure, variants in loops.items():
            samples, tallies = compare_requests(variants, n, rounds)
            results[measure] = {
                "clock": "wall",
                "operations": n,
                "rounds": rounds,
                "variants": {
                    name: {
                        **summary(values),
                        "samples_ns": values,
                        **tallies[name].report(PG_EXPECTED[measure][name]),
                    }
                    for name, values in samples.items()
                },
            }
        import psycopg  # noqa: PLC0415

        version = primary.execute("SHOW server_version").fetchone()[0]
        meta = {
            "postgresql": version.split()[0],
            "psycopg": psycopg.__version__,
            "conn_max_age": CONN_MAX_AGE,
            "standby_port": standby_port,
            "dynroute_setting": DYNROUTE_SETTING,
            "dynroute_time_setting": DYNROUTE_TIME_SETTING,
            "pin_seconds": PG_PIN_SECONDS,
            # Sessions on the database at the end: the connections both libraries used.
            "sessions_at_end": {PRIMARY: sessions(primary), STANDBY: sessions(standby)},
        }
    return results, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: check it runs")
    parser.add_argument(
        "--part",
        choices=("decisions", "requests"),
        default="decisions",
        help="decisions: SQLite, CPU time (the default); requests: PostgreSQL and a standby",
    )
    parser.add_argument("--count", nargs=2, metavar=("MEASURE/VARIANT", "N"))
    arguments = parser.parse_args()
    meta: dict[str, Any] = {}
    if arguments.count or arguments.part == "decisions":
        results = run_decisions(quick=arguments.quick, count=arguments.count)
        if arguments.count:
            return
    else:
        try:
            results, meta = run_requests(quick=arguments.quick)
        except UnavailableError as error:
            results, meta = {}, {"postgresql_skipped": str(error)}
    import multidb  # noqa: PLC0415

    meta.update(
        python=sys.version.split()[0],
        django=django.get_version(),
        multidb=f"django-multidb-router {multidb.__version__}",
    )
    json.dump({"meta": meta, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
