"""Measure dynroute and django-dynamic-db-router 0.3.0 side by side, in one process.

``bench/run.py`` runs this inside a throwaway venv where django-dynamic-db-router
0.3.0 is installed from PyPI. ``import dynamic_db_router`` finds that package
(site-packages comes first on ``sys.path``); dynroute comes from this checkout's
``src/``, appended last, so its own drop-in ``dynamic_db_router`` stays hidden. Both run
in the same process, on the same Django, alternating round by round, so that the
machine's noise hits both alike.

CPU-bound figures use the process's CPU time: on a busy machine, wall-clock time also
counts the moments the process is descheduled, which swamps differences of a few
percent. Figures that wait on something else (a server, connecting, thread hops) use
wall-clock time.

``--count VARIANT N`` runs one variant N times without timing, for instruction counts
under ``valgrind --tool=callgrind`` (see run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.append(str(ROOT / "src"))

import django  # noqa: E402 - after sys.path is set
from django.conf import settings  # noqa: E402

COUNTS = {"default": 3, "other": 5, "pg": 7, "rt_sqlite": 11, "rt_pg": 13}
PG_SERVER = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("DYNROUTE_PG_HOST", "127.0.0.1"),
    "PORT": os.environ.get("DYNROUTE_PG_PORT", "5432"),
    "USER": os.environ.get("DYNROUTE_PG_USER", "postgres"),
    "PASSWORD": os.environ.get("DYNROUTE_PG_PASSWORD", ""),
}
PG_DATABASES = ("dynroute_bench", "dynroute_bench_rt")

Run = Callable[[int], object]


def pg_admin(statement: str) -> list[Any]:
    import psycopg  # noqa: PLC0415 - only with PostgreSQL

    with psycopg.connect(
        host=PG_SERVER["HOST"],
        port=int(PG_SERVER["PORT"]),
        user=PG_SERVER["USER"],
        password=PG_SERVER["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    ) as connection:
        cursor = connection.execute(statement)
        return cursor.fetchall() if cursor.description else []


def pg_available() -> bool:
    try:
        pg_admin("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means no server to measure
        return False
    return True


def setup(folder: Path, *, postgres: bool) -> dict[str, dict[str, Any]]:
    """Configure Django, create and seed the databases; return runtime configurations."""

    def sqlite(name: str) -> dict[str, Any]:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / f"{name}.sqlite3")}

    databases = {"default": sqlite("default"), "other": sqlite("other")}
    runtime = {"sqlite": sqlite("runtime")}
    if postgres:
        for name in PG_DATABASES:
            pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            pg_admin(f"CREATE DATABASE {name}")
        databases["pg"] = {**PG_SERVER, "NAME": PG_DATABASES[0]}
        runtime["pg"] = {**PG_SERVER, "NAME": PG_DATABASES[1]}
    settings.configure(
        DATABASES=databases,
        # Each variant sets router.routers to its own router; dynroute checks the
        # setting when a block is first entered.
        DATABASE_ROUTERS=["dynroute.DynamicDbRouter"],
        INSTALLED_APPS=["benchapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from benchapp.models import Item  # noqa: PLC0415 - after setup()
    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    import dynroute  # noqa: PLC0415

    for alias in databases:
        call_command("migrate", run_syncdb=True, database=alias, verbosity=0)
        Item.objects.using(alias).bulk_create(Item(name=alias) for _ in range(COUNTS[alias]))
    for kind, configuration in runtime.items():
        with (
            dynroute.in_database(configuration, write=True) as route,
            connections[route.alias].schema_editor() as editor,
        ):
            editor.create_model(Item)
            rows = (Item(name=kind) for _ in range(COUNTS[f"rt_{kind}"]))
            Item.objects.using(route.alias).bulk_create(rows)
    return runtime


def per_op(run: Run, n: int, clock: Callable[[], int]) -> float:
    start = clock()
    run(n)
    return (clock() - start) / n


def compare(
    variants: dict[str, Run], n: int, rounds: int, clock: Callable[[], int]
) -> dict[str, list[float]]:
    """Time each variant ``rounds`` times, interleaved, rotating the order."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        variants[name](max(1, n // 10))  # warm up
    gc.collect()
    gc.disable()
    try:
        for round_index in range(rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                samples[name].append(per_op(variants[name], n, clock))
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {"median_ns": statistics.median(ordered), "q1_ns": quartiles[0], "q3_ns": quartiles[2]}


def build_variants(runtime: dict[str, dict[str, Any]]) -> dict[str, dict[str, Run]]:  # noqa: C901 - one place lists every variant
    """Every measured loop, by measure and variant."""
    from benchapp.models import Item  # noqa: PLC0415
    from django.db import router  # noqa: PLC0415
    from django.db.utils import ConnectionHandler  # noqa: PLC0415

    import dynamic_db_router as original  # noqa: PLC0415
    import dynroute  # noqa: PLC0415

    if "site-packages" not in (original.__file__ or "") or "src" not in (dynroute.__file__ or ""):
        msg = f"wrong modules loaded: {original.__file__}, {dynroute.__file__}"
        raise RuntimeError(msg)
    routers = {"dynroute": dynroute.DynamicDbRouter(), "original": original.DynamicDbRouter()}
    modules = {"dynroute": dynroute, "original": original}

    def use_router(impl: str) -> None:
        router.routers = [routers[impl]]

    def enter_exit(impl: str, *, write: bool) -> Run:
        block = modules[impl].in_database("other", write=write)

        def run(n: int) -> None:
            for _ in range(n):
                with block:
                    pass

        return run

    def new_block(impl: str) -> Run:
        in_database = modules[impl].in_database

        def run(n: int) -> None:
            for _ in range(n):
                with in_database("other", write=True):
                    pass

        return run

    def decision(impl: str) -> Run:
        dynamic_router = routers[impl]
        block = modules[impl].in_database("other", write=True)

        def run(n: int) -> None:
            db_for_read, db_for_write = dynamic_router.db_for_read, dynamic_router.db_for_write
            with block:
                for _ in range(n):
                    db_for_read(Item)
                    db_for_write(Item)

        return run

    def query(alias: str, impl: str | None) -> Run:
        if impl is None:

            def run_using(n: int) -> int:
                count = 0
                for _ in range(n):
                    count = Item.objects.using(alias).count()
                return count

            return run_using

        block = modules[impl].in_database(alias)

        def run_routed(n: int) -> int:
            use_router(impl)
            count = 0
            with block:
                for _ in range(n):
                    count = Item.objects.count()
            return count

        return run_routed

    def hooked_query(state: str) -> Run:
        """A routed count() on SQLite: without the write hook, with it, or preventing."""
        from django.db import connections  # noqa: PLC0415

        from dynroute.writes import _hook  # noqa: PLC0415

        block = dynroute.in_database("other")
        scope = dynroute.prevent_writes() if state == "preventing" else contextlib.nullcontext()

        def run(n: int) -> int:
            use_router("dynroute")
            _hook.install_everywhere()
            wrappers = connections["other"].execute_wrappers
            if state == "before":
                wrappers[:] = [w for w in wrappers if w is not _hook.write_hook]
            else:
                _hook.install(connections["other"])
            count = 0
            with block, scope:
                for _ in range(n):
                    count = Item.objects.count()
            return count

        return run

    def async_query(alias: str, impl: str | None) -> Run:
        async def using(n: int) -> int:
            count = 0
            for _ in range(n):
                count = await Item.objects.using(alias).acount()
            return count

        async def routed(n: int) -> int:
            count = 0
            async with dynroute.in_database(alias):
                for _ in range(n):
                    count = await Item.objects.acount()
            return count

        async def routed_original(n: int) -> int:
            count = 0
            with original.in_database(alias):  # it has no async with
                for _ in range(n):
                    count = await Item.objects.acount()
            return count

        body = {None: using, "dynroute": routed, "original": routed_original}[impl]

        def run(n: int) -> int:
            if impl is not None:
                use_router(impl)
            return asyncio.run(body(n))

        return run

    def runtime_block(kind: str, impl: str, *, reuse: bool) -> Run:
        configuration = dict(runtime[kind])
        if reuse:
            configuration["CONN_MAX_AGE"] = 600
        if impl == "original":
            # It fails on half-filled settings (KeyError: 'TIME_ZONE'): give it
            # Django's defaults, as the issue says.
            filled = ConnectionHandler({"default": copy.deepcopy(configuration)}).settings
            configuration = filled["default"]

        def run(n: int) -> int:
            use_router(impl)
            in_database = modules[impl].in_database
            count = 0
            for _ in range(n):
                with in_database(configuration):
                    count = Item.objects.count()
            return count

        return run

    variants: dict[str, dict[str, Run]] = {
        "enter_exit_read": {impl: enter_exit(impl, write=False) for impl in modules},
        "enter_exit_readwrite": {impl: enter_exit(impl, write=True) for impl in modules},
        "new_block": {impl: new_block(impl) for impl in modules},
        "router_decision": {impl: decision(impl) for impl in modules},
        "orm_sqlite": {
            "using": query("other", None),
            "dynroute": query("other", "dynroute"),
            "original": query("other", "original"),
        },
        "write_hook": {state: hooked_query(state) for state in ("before", "hooked", "preventing")},
        "async_sqlite": {
            "using": async_query("other", None),
            "dynroute": async_query("other", "dynroute"),
            "original": async_query("other", "original"),
        },
        "runtime_sqlite": {
            "original": runtime_block("sqlite", "original", reuse=False),
            "dynroute": runtime_block("sqlite", "dynroute", reuse=False),
            "dynroute_reuse": runtime_block("sqlite", "dynroute", reuse=True),
        },
    }
    if "pg" in runtime:
        variants["orm_pg"] = {
            "using": query("pg", None),
            "dynroute": query("pg", "dynroute"),
            "original": query("pg", "original"),
        }
        variants["runtime_pg"] = {
            "original": runtime_block("pg", "original", reuse=False),
            "dynroute": runtime_block("pg", "dynroute", reuse=False),
            "dynroute_reuse": runtime_block("pg", "dynroute", reuse=True),
        }
    return variants


# measure -> (operations per sample, rounds, clock), full and quick
PLAN: dict[str, tuple[int, int, str]] = {
    "enter_exit_read": (2000, 301, "cpu"),
    "enter_exit_readwrite": (2000, 301, "cpu"),
    "new_block": (2000, 301, "cpu"),
    "router_decision": (2000, 301, "cpu"),
    "orm_sqlite": (100, 201, "cpu"),
    "write_hook": (100, 201, "cpu"),
    "orm_pg": (300, 21, "wall"),
    "async_sqlite": (200, 15, "wall"),
    "runtime_sqlite": (200, 11, "wall"),
    "runtime_pg": (60, 11, "wall"),
}
EXPECTED = {
    "orm_sqlite": COUNTS["other"],
    "write_hook": COUNTS["other"],
    "orm_pg": COUNTS["pg"],
    "async_sqlite": COUNTS["other"],
    "runtime_sqlite": COUNTS["rt_sqlite"],
    "runtime_pg": COUNTS["rt_pg"],
}
CLOCKS = {"cpu": time.process_time_ns, "wall": time.perf_counter_ns}


def pin_to_one_cpu() -> None:
    """Stay on one CPU: moving between CPUs costs cold caches, noise in CPU time."""
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[-1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: check it runs")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL figures")
    parser.add_argument("--count", nargs=2, metavar=("MEASURE/VARIANT", "N"))
    arguments = parser.parse_args()
    postgres = not arguments.no_postgres and pg_available()
    pin_to_one_cpu()
    with tempfile.TemporaryDirectory(prefix="dynroute-bench-") as folder:
        runtime = setup(Path(folder), postgres=postgres)
        variants = build_variants(runtime)
        if arguments.count:
            measure, variant = arguments.count[0].split("/")
            variants[measure][variant](int(arguments.count[1]))
            return
        results: dict[str, Any] = {}
        for measure, loops in variants.items():
            n, rounds, clock = PLAN[measure]
            if arguments.quick:
                n, rounds = max(1, n // 10), 3
            routed_to = {name: run(1) for name, run in loops.items()}
            samples = compare(loops, n, rounds, CLOCKS[clock])
            results[measure] = {
                "clock": clock,
                "operations": n,
                "rounds": rounds,
                "variants": {
                    name: {
                        **summary(values),
                        "samples_ns": values,
                        "right_database": (
                            routed_to[name] == EXPECTED[measure] if measure in EXPECTED else True
                        ),
                    }
                    for name, values in samples.items()
                },
            }
        from dynroute import close_idle_connections  # noqa: PLC0415

        close_idle_connections()
    if postgres:
        for name in PG_DATABASES:
            pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    meta = {
        "python": sys.version.split()[0],
        "django": django.get_version(),
        "original": "django-dynamic-db-router 0.3.0",
        "postgresql": postgres,
    }
    json.dump({"meta": meta, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
