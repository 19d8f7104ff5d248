"""Benchmark dynroute against django-dynamic-db-router 0.3.0, ``.using()`` and multidb 0.11.

Usage (from the repository root)::

    python3 bench/run.py                   # full run; writes BENCHMARKS.md
    python3 bench/run.py --part replicas   # only the comparison with multidb
    python3 bench/run.py --quick           # a few repetitions, to check that it runs

It creates ``bench/.venv-original`` with django-dynamic-db-router 0.3.0 from PyPI
(whose ``dynamic_db_router`` module would clash with dynroute's drop-in), then runs
``bench/measure.py`` there, which loads dynroute from ``src/`` next to it and times
both in one process, interleaved. For the primary/replica comparison it creates
``bench/.venv-multidb`` with django-multidb-router 0.11 from PyPI, the same Django,
psycopg and dynroute installed editable, and runs ``bench/measure_replicas.py`` there,
in two processes: the routing decisions on SQLite, then whole requests through each
middleware on the PostgreSQL server and a streaming standby of it that the script
starts (``tests/standby.py``, root or the ``postgres`` user) and removes. The full run
repeats each in several processes and, where valgrind is installed, also counts
instructions per operation (deterministic, unlike time on a shared machine) for the
CPU-bound measures. PostgreSQL figures need the server the test suite uses; without it
(or with ``--no-postgres``) they are left out.
Each part rewrites its own section of BENCHMARKS.md and keeps the other.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv-original"
VENV_MULTIDB = BENCH / ".venv-multidb"
MULTIDB = "django-multidb-router==0.11"
PSYCOPG = "psycopg[binary]>=3.1"
REQUIREMENTS = [
    "django-dynamic-db-router==0.3.0",
    "django>=4.2",
    "asgiref>=3.6",
    "typing-extensions>=4.12",
    PSYCOPG,
]
# measure/variant -> operations, for instruction counts
COUNTED = {
    "enter_exit_read": 20000,
    "enter_exit_readwrite": 20000,
    "new_block": 20000,
    "router_decision": 20000,
    "orm_sqlite": 2000,
    "write_hook": 2000,
}
# the variants each counted measure compares
COUNTED_VARIANTS = {
    "orm_sqlite": ["using", "dynroute", "original"],
    "write_hook": ["before", "hooked", "preventing"],
}
# the same for measure_replicas.py (its requests run on PostgreSQL: timed, not counted)
COUNTED_REPLICAS = {"replica_decision": 20000, "replica_decision_pinned": 20000}
# measure_replicas.py's requests on PostgreSQL and a streaming standby
REQUESTS = ("pg_get", "pg_post", "pg_get_after_post", "pg_get_caught_up")
# ... their variants, as the tables name them
REQUEST_VARIANTS = {
    "multidb": "multidb 0.11",
    "dynroute": "dynroute, pin by position",
    "dynroute_time": "dynroute, pin by time",
}
# the request rows the goal "<= 1.0x multidb" is for
REQUEST_GOALS = ("pg_get", "pg_post", "pg_get_caught_up")
# ... and the floor of "one query more": SELECT 1 through a Django cursor
ROUND_TRIP = "pg_round_trip"
LABELS = {
    "enter_exit_read": "enter + exit a block, read-only (block built once)",
    "enter_exit_readwrite": "enter + exit a block, read-write (block built once)",
    "new_block": "`with in_database(alias, write=True)` (built each time)",
    "router_decision": "router decision: `db_for_read` + `db_for_write` in a block",
    "orm_sqlite": "`Item.objects.count()` on SQLite",
    "orm_pg": "`Item.objects.count()` on PostgreSQL",
    "async_sqlite": "`await Item.objects.acount()` on SQLite",
    "write_hook": "routed `Item.objects.count()` on SQLite",
    "runtime_sqlite": "SQLite",
    "runtime_pg": "PostgreSQL",
    "replica_decision": "`db_for_read` + `db_for_write`, reads on a replica",
    "replica_decision_pinned": "`db_for_read` + `db_for_write`, reads pinned to the primary",
    "pg_get": "GET (fresh visitor, one read)",
    "pg_post": "POST (fresh visitor, one write)",
    "pg_get_after_post": "GET pinned right after POST",
    "pg_get_caught_up": "GET with a pin whose replica has caught up",
    "pg_round_trip": "`SELECT 1` through a Django cursor",
}


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(*, fresh: bool) -> None:
    """Create the throwaway venv with the original package, if needed."""
    if fresh and VENV.exists():
        shutil.rmtree(VENV)
    if not venv_python().exists():
        print(f"creating {VENV.relative_to(ROOT)} with django-dynamic-db-router 0.3.0 ...")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [
            str(venv_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        check=True,
    )


def ensure_multidb_venv(*, fresh: bool) -> None:
    """Create the throwaway venv with django-multidb-router 0.11, if needed.

    It gets the Django of ``bench/.venv-original``, psycopg (the requests run on
    PostgreSQL) and dynroute installed editable (so it runs this checkout's ``src/``);
    pip runs only when one of them is missing.
    """
    if fresh and VENV_MULTIDB.exists():
        shutil.rmtree(VENV_MULTIDB)
    django = subprocess.run(
        [str(venv_python()), "-c", "import django; print(django.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    python = venv_python(VENV_MULTIDB)
    if not python.exists():
        print(f"creating {VENV_MULTIDB.relative_to(ROOT)} with {MULTIDB} ...")
        subprocess.run([sys.executable, "-m", "venv", str(VENV_MULTIDB)], check=True)
    wanted = f"{ROOT / 'src' / 'dynroute'} 0.11.0 {django}"
    probe = (
        "import os, dynroute, multidb, django, psycopg; "
        "print(os.path.dirname(dynroute.__file__), multidb.__version__, django.__version__)"
    )
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
            f"django=={django}",
            MULTIDB,
            PSYCOPG,
            "-e",
            str(ROOT),
        ],
        check=True,
    )


def measure(*arguments: str, script: str = "measure.py", venv: Path = VENV) -> dict[str, Any]:
    done = subprocess.run(
        [str(venv_python(venv)), str(BENCH / script), *arguments],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure_replicas(*arguments: str, postgres: bool) -> dict[str, Any]:
    """One process of each part of measure_replicas.py (Django is set up once a process).

    The decisions on SQLite, then (unless ``postgres`` is false) the requests on
    PostgreSQL and a standby; one result of both.
    """
    run = measure(
        *arguments, "--part", "decisions", script="measure_replicas.py", venv=VENV_MULTIDB
    )
    if postgres:
        requests = measure(
            *arguments, "--part", "requests", script="measure_replicas.py", venv=VENV_MULTIDB
        )
        run["meta"].update(requests["meta"])
        run["results"].update(requests["results"])
    return run


def instructions(  # noqa: PLR0913 - one measurement's every knob, named
    variant: str,
    n: int,
    script: str = "measure.py",
    *,
    tree: Path = ROOT,
    seed: int = 0,
    collector: bool = True,
) -> int:
    """Instructions executed by ``tree/bench/script --count variant n`` (valgrind).

    ``tree`` is a checkout whose own scripts and ``src/`` are measured (bench/hot_path.py
    passes an earlier commit's); ``seed`` is the ``PYTHONHASHSEED``; ``collector=False``
    turns the garbage collector off in the process (``bench/nogc/sitecustomize.py``).
    """
    environment = {**os.environ, "PYTHONHASHSEED": str(seed)}
    path = [] if collector else [str(BENCH / "nogc")]
    if script == "measure.py":
        # measure.py appends the tree's src to sys.path itself, after site-packages,
        # where the original django-dynamic-db-router must be found first.
        command = [str(venv_python()), str(tree / "bench" / script), "--no-postgres"]
    else:
        command = [str(venv_python(VENV_MULTIDB)), str(tree / "bench" / script)]
        # The tree's src first: the multidb venv has this checkout installed editable.
        path.append(str(tree / "src"))
    if path:
        environment["PYTHONPATH"] = os.pathsep.join(path)
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *command,
            "--count",
            variant,
            str(n),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
        env=environment,
    )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    msg = f"no instruction count from valgrind for {variant}: {done.stderr[-500:]}"
    raise RuntimeError(msg)


def count_instructions(*, original: bool, replicas: bool) -> dict[str, dict[str, float]]:
    """Instructions per operation, for the CPU-bound measures of the parts asked for.

    Each job runs one variant N times in a fresh process; the process that runs a
    variant 0 times (same script, same set-up) is subtracted.
    """
    jobs: dict[str, tuple[str, int, str]] = {}
    per_measure: dict[str, int] = {}
    if original:
        jobs["base/measure.py"] = ("enter_exit_read/dynroute", 0, "measure.py")
        per_measure.update(COUNTED)
        for measure_name, n in COUNTED.items():
            for variant in COUNTED_VARIANTS.get(measure_name, ["dynroute", "original"]):
                jobs[f"{measure_name}/{variant}"] = (f"{measure_name}/{variant}", n, "measure.py")
    if replicas:
        script = "measure_replicas.py"
        jobs[f"base/{script}"] = ("replica_decision/dynroute", 0, script)
        per_measure.update(COUNTED_REPLICAS)
        for measure_name, n in COUNTED_REPLICAS.items():
            for variant in ("dynroute", "multidb"):
                jobs[f"{measure_name}/{variant}"] = (f"{measure_name}/{variant}", n, script)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = dict(
            zip(jobs, pool.map(lambda job: instructions(*job), jobs.values()), strict=True)
        )
    bases = {key.split("/")[1]: totals.pop(key) for key in list(totals) if key.startswith("base/")}
    counts: dict[str, dict[str, float]] = {}
    for key, total in totals.items():
        measure_name, variant = key.split("/")
        base = bases[jobs[key][2]]
        counts.setdefault(measure_name, {})[variant] = (total - base) / per_measure[measure_name]
    return counts


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over processes of each variant's median; keep the quartiles of the first."""
    combined: dict[str, Any] = {}
    for measure_name, first in runs[0]["results"].items():
        variants = {}
        for name in first["variants"]:
            per_run = [run["results"][measure_name]["variants"][name] for run in runs]
            variants[name] = {
                "median_ns": statistics.median(v["median_ns"] for v in per_run),
                "q1_ns": statistics.median(v["q1_ns"] for v in per_run),
                "q3_ns": statistics.median(v["q3_ns"] for v in per_run),
                "right_database": all(v["right_database"] for v in per_run),
            }
        combined[measure_name] = {**first, "variants": variants}
    return combined


def paired(
    runs: list[dict[str, Any]], measure_name: str, a: str, b: str, *, difference: bool = False
) -> tuple[float, float, float]:
    """Median and quartiles of a/b over rounds: each round timed both, one after the other.

    ``difference``: of a - b (ns) instead.
    """
    values = [
        x - y if difference else x / y
        for run in runs
        for x, y in zip(
            run["results"][measure_name]["variants"][a]["samples_ns"],
            run["results"][measure_name]["variants"][b]["samples_ns"],
            strict=True,
        )
    ]
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4)
    return median, q1, q3


def ratio_text(value: tuple[float, float, float], digits: int = 2) -> str:
    median, q1, q3 = value
    return f"**{median:.{digits}f}x** ({q1:.{digits}f} to {q3:.{digits}f})"


def duration(ns: float) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.1f} µs"
    return f"{ns:.0f} ns"


def signed_duration(ns: float) -> str:
    return ("-" if ns < 0 else "+") + duration(abs(ns))


def difference_text(value: tuple[float, float, float]) -> str:
    median, q1, q3 = value
    return f"**{signed_duration(median)}** ({signed_duration(q1)} to {signed_duration(q3)})"


def spread(entry: dict[str, Any]) -> str:
    return (
        f"{duration(entry['median_ns'])} ({duration(entry['q1_ns'])} to {duration(entry['q3_ns'])})"
    )


MICRO = ("enter_exit_read", "enter_exit_readwrite", "new_block", "router_decision")
INTRO = {
    "micro": (
        "Median CPU time per operation (interquartile range). The ratio is the median, "
        "over all rounds, of dynroute's time divided by the original's in the same round "
        "(quartiles in brackets)."
    ),
    "queries": (
        "The same query, routed by a block or sent with `.using()` outside any block "
        "(SQLite: CPU time; PostgreSQL and async: wall-clock time); ratios as above."
    ),
    "write_hook": (
        'The same routed query (CPU time; ratios to "before" as above): before any '
        "`prevent_writes()` (no hook on the connection); with the hook every connection "
        "gets at the first use, nothing prevented; and inside `prevent_writes()`, where "
        "each statement is classified."
    ),
    "runtime": (
        "Blocks per second (wall-clock; median time per block in brackets). Teardown, the "
        "default: connect and close in every block. Reuse: `CONN_MAX_AGE` set, the "
        "connection is kept between blocks. The original gets fully filled settings (it "
        "fails otherwise) and has no reuse mode."
    ),
}


def micro_table(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    results = combine(runs)
    lines = [
        "### dynroute against django-dynamic-db-router 0.3.0",
        "",
        INTRO["micro"],
        "",
        "| operation | original 0.3.0 | dynroute | dynroute / original |",
        "|---|---|---|---|",
    ]
    for name in MICRO:
        variants = results[name]["variants"]
        ratio = ratio_text(paired(runs, name, "dynroute", "original"))
        original, dynroute = spread(variants["original"]), spread(variants["dynroute"])
        lines.append(f"| {LABELS[name]} | {original} | {dynroute} | {ratio} |")
    if counts:
        lines += [
            "",
            "Instructions per operation (valgrind callgrind, `PYTHONHASHSEED=0`; repeatable):",
            "",
            "| operation | original 0.3.0 | dynroute | dynroute / original |",
            "|---|---|---|---|",
        ]
        for name in MICRO:
            c = counts[name]
            ratio = c["dynroute"] / c["original"]
            cells = f"{c['original']:,.0f} | {c['dynroute']:,.0f} | **{ratio:.2f}x**"
            lines.append(f"| {LABELS[name]} | {cells} |")
    return lines


def query_table(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    results = combine(runs)
    lines = [
        "### Routed queries against `.using()`",
        "",
        INTRO["queries"],
        "",
        (
            "| query | `.using()` | dynroute block | dynroute / `.using()` | original block "
            "| original / `.using()` |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name in ("orm_sqlite", "orm_pg", "async_sqlite"):
        if name not in results:
            continue
        variants = results[name]["variants"]
        if variants["original"]["right_database"]:
            original = ratio_text(paired(runs, name, "original", "using"), 3)
            original_cells = f"{spread(variants['original'])} | {original}"
        else:
            original_cells = "wrong database: the route is lost in the async ORM's thread | n/a"
        routed = ratio_text(paired(runs, name, "dynroute", "using"), 3)
        using, dynroute = spread(variants["using"]), spread(variants["dynroute"])
        lines.append(f"| {LABELS[name]} | {using} | {dynroute} | {routed} | {original_cells} |")
    if "orm_sqlite" in counts:
        c = counts["orm_sqlite"]
        lines += [
            "",
            (
                f"Instructions per `count()` on SQLite: `.using()` {c['using']:,.0f}, "
                f"dynroute block {c['dynroute']:,.0f} (**{c['dynroute'] / c['using']:.3f}x**), "
                f"original block {c['original']:,.0f} ({c['original'] / c['using']:.3f}x)."
            ),
        ]
    return lines


def write_hook_table(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    variants = combine(runs)["write_hook"]["variants"]
    hooked = ratio_text(paired(runs, "write_hook", "hooked", "before"), 3)
    preventing = ratio_text(paired(runs, "write_hook", "preventing", "before"), 3)
    lines = [
        "### Write prevention",
        "",
        INTRO["write_hook"],
        "",
        "| query | no hook (before) | hook, nothing prevented | inside `prevent_writes()` |",
        "|---|---|---|---|",
        (
            f"| {LABELS['write_hook']} | {spread(variants['before'])} | "
            f"{spread(variants['hooked'])}: {hooked} | {spread(variants['preventing'])}: "
            f"{preventing} |"
        ),
    ]
    if "write_hook" in counts:
        c = counts["write_hook"]
        lines += [
            "",
            (
                f"Instructions per `count()`: before {c['before']:,.0f}, hook with nothing "
                f"prevented {c['hooked']:,.0f} (**{c['hooked'] / c['before']:.4f}x**), "
                f"preventing {c['preventing']:,.0f} ({c['preventing'] / c['before']:.4f}x)."
            ),
        ]
    return lines


def runtime_table(runs: list[dict[str, Any]]) -> list[str]:
    results = combine(runs)

    def rate(entry: dict[str, Any]) -> str:
        return f"{1e9 / entry['median_ns']:,.0f}/s ({duration(entry['median_ns'])})"

    lines = [
        "### A block on a runtime configuration, one query in it",
        "",
        INTRO["runtime"],
        "",
        (
            "| database | original, teardown | dynroute, teardown | dynroute, reuse "
            "| reuse / teardown |"
        ),
        "|---|---|---|---|---|",
    ]
    for name in ("runtime_sqlite", "runtime_pg"):
        if name in results:
            variants = results[name]["variants"]
            speedup = ratio_text(paired(runs, name, "dynroute", "dynroute_reuse"), 1)
            cells = [rate(variants[v]) for v in ("original", "dynroute", "dynroute_reuse")]
            lines.append(f"| {LABELS[name]} | {' | '.join(cells)} | {speedup} |")
    return lines


def verdicts(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    """The issue's goals, each with its figure and whether it holds."""
    results = combine(runs)
    lines: list[str] = []

    def check(goal: str, value: float, limit: float, *, at_most: bool = True) -> None:
        met = value <= limit if at_most else value >= limit
        sign = "≤" if at_most else "≥"
        status = "met" if met else "NOT MET"
        lines.append(f"- {goal}: {value:.3f}x, {status} (goal {sign} {limit}x)")

    for name in ("enter_exit_read", "enter_exit_readwrite", "router_decision"):
        check(f"{LABELS[name]}, time", paired(runs, name, "dynroute", "original")[0], 1.0)
        if name in counts:
            c = counts[name]
            check(f"{LABELS[name]}, instructions", c["dynroute"] / c["original"], 1.0)
    for name in ("orm_sqlite", "orm_pg"):
        if name in results:
            routed = paired(runs, name, "dynroute", "using")[0]
            check(f"{LABELS[name]}, routed / `.using()`", routed, 1.02)
    if "orm_sqlite" in counts:
        c = counts["orm_sqlite"]
        check(
            "`count()` on SQLite, routed / `.using()`, instructions",
            c["dynroute"] / c["using"],
            1.02,
        )
    check(
        "routed `count()`, write hook installed, nothing prevented / before, time",
        paired(runs, "write_hook", "hooked", "before")[0],
        1.01,
    )
    if "write_hook" in counts:
        c = counts["write_hook"]
        check(
            "routed `count()`, write hook installed, nothing prevented / before, instructions",
            c["hooked"] / c["before"],
            1.01,
        )
    if "runtime_pg" in results:
        speedup = paired(runs, "runtime_pg", "dynroute", "dynroute_reuse")[0]
        check(
            "PostgreSQL runtime configuration, reuse / teardown throughput",
            speedup,
            10,
            at_most=False,
        )
    wrong = [
        f"{name}/{variant}"
        for name, result in results.items()
        for variant, entry in result["variants"].items()
        if not entry["right_database"]
    ]
    if wrong:
        lines.append(f"- routed to the wrong database: {', '.join(wrong)}")
    return lines


REPLICA_INTRO = {
    "decision": (
        "One `router.db_for_read(Item)` and one `router.db_for_write(Item)` through "
        "Django's `django.db.router` (the real `ConnectionRouter`), with the library's "
        "router as the only one in `DATABASE_ROUTERS`; SQLite aliases `default` (the "
        "primary), `replica1` and `replica2`. **Reads on a replica**: dynroute inside "
        '`in_database(policy=PrimaryReplica("default", ("replica1", "replica2"), '
        "pin_after_write=False))`, entered once around the timed loop (so the loop's "
        "writes do not pin its reads); multidb's `PinningReplicaRouter` with the thread "
        "not pinned (round robin per read). **Reads pinned to the primary**: dynroute's "
        "block with `pin_after_write=True` (the default), one write made before the loop, "
        "so every timed read follows a write (an `UPDATE` of no row, which pins: "
        "dynroute pins when a write statement runs); multidb with `pin_this_thread()`, "
        "what its "
        "middleware does for a request that writes or carries its cookie. Median CPU time "
        "per read + write (interquartile range); the ratio is the median over rounds of "
        "dynroute's time over multidb's in the same round."
    ),
    "request": (
        "One request through `django.test.Client`, with only the library's middleware in "
        "`MIDDLEWARE` and its router installed, on the real PostgreSQL server as `default` "
        "(the primary) and, as `replica1`, a streaming standby of it that the run starts "
        "(`tests/standby.py`: a base backup with its own replication slot) and removes "
        "when it ends; both on a database the run creates on the primary, "
        "`dynroute_bench_replicas`, dropped at the end. Three variants: **dynroute, pin "
        "by position** (the default): `dynroute.middleware.PrimaryReplicaMiddleware` "
        "with `DYNROUTE_PRIMARY_REPLICA = {setting}`: after a request that writes it reads "
        "the primary's `pg_current_wal_insert_lsn()` (one query) for the signed cookie, "
        "and a GET carrying that cookie asks the standby for `pg_last_wal_replay_lsn()` "
        "(one query) unless it knows already that the standby has replayed that far, then "
        "reads the standby if it has, else the primary; **dynroute, pin by time**: the "
        "same middleware with `DYNROUTE_PRIMARY_REPLICA = {time_setting}` (given with "
        "`override_settings` while that variant's client builds its middleware chain, "
        "when the middleware reads its settings): no position read, a client that wrote "
        "reads the primary for `pin_seconds`, the work multidb does; **multidb**: "
        "`multidb.middleware.PinningRouterMiddleware` with "
        '`multidb.PinningReplicaRouter`, `REPLICA_DATABASES = ["replica1"]` and '
        "`MULTIDB_PINNING_SECONDS = {pin}`. The view reads `Item.objects.count()` (GET) "
        "or saves one `Note` (POST). **GET**: a fresh visitor (no cookie). **POST**: a "
        "fresh visitor. **GET pinned right after POST**: a fresh visitor POSTs (not "
        "timed), then at once GETs with the cookies that POST got. **GET with a pin whose "
        "replica has caught up**: the same, except that between the two the run waits "
        "(not timed) until the standby has replayed up to the primary's "
        "`pg_current_wal_insert_lsn()` read just after the POST (polling "
        "`pg_last_wal_replay_lsn()` on the standby); multidb, and dynroute pinning by "
        "time, pin for a time: their GET reads the primary for the whole pin window, "
        "caught up or not. Wall-clock time of the whole request (client, handler, middleware, "
        "view and the database round trips): each round times {n} requests of each "
        "variant, one variant after the other, the order rotating; the median over "
        "{rounds} rounds{processes} of a round's mean (quartiles over rounds in "
        "brackets); a ratio is the median over rounds of one variant's time over "
        "another's in the same round, a difference (position - time) the median over "
        "rounds of the one's time minus the other's. **One round trip**, the floor of "
        '"one query more": `SELECT 1` (and `fetchone()`) through a Django cursor of the '
        "primary or of the standby, no request around it, timed the same way. All "
        "variants keep "
        "their connections across requests: `CONN_MAX_AGE = {conn_max_age}` on both "
        "aliases, and `django.test.Client` keeps `close_old_connections` off "
        "`request_started` and `request_finished`. An execute wrapper on both "
        "connections (the same for every variant, inside the timing) notes which "
        "server answered the view's query and which queries the library made itself."
    ),
}

#: What the output calls each alias of the PostgreSQL part.
ROLES = {"default": "primary", "replica1": "standby"}


def role(alias: str) -> str:
    return ROLES.get(alias, alias)


def reads_cell(runs: list[dict[str, Any]], measure_name: str, impl: str) -> str:
    """Where the view's query of the timed requests went, added up over processes."""
    total: dict[str, int] = {}
    for run in runs:
        for alias, count in run["results"][measure_name]["variants"][impl]["reads"].items():
            total[alias] = total.get(alias, 0) + count
    requests = sum(total.values())
    if len(total) == 1:
        return f"{role(next(iter(total)))}, {requests:,} of {requests:,}"
    parts = ", ".join(f"{role(alias)} {count:,}" for alias, count in sorted(total.items()))
    return f"{parts} (of {requests:,})"


def library_cell(runs: list[dict[str, Any]], measure_name: str, impl: str) -> str:
    """The library's own queries per request, by server, averaged over processes."""
    per_alias: dict[str, list[float]] = {}
    for run in runs:
        queries = run["results"][measure_name]["variants"][impl]["library_queries"]
        for alias in ROLES:
            per_alias.setdefault(alias, []).append(queries.get(alias, 0.0))
    cells = [
        f"{role(alias)} {statistics.fmean(values):.2f}"
        for alias, values in per_alias.items()
        if any(values)
    ]
    return ", ".join(cells) or "none"


def request_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Connections kept, the standby's replay delay, the libraries' own queries."""
    lines = []
    per_process = []
    for run in runs:
        pids: dict[str, set[int]] = {}
        for name in (*REQUESTS, ROUND_TRIP):
            if name not in run["results"]:
                continue
            for entry in run["results"][name]["variants"].values():
                for alias, found in entry["pids"].items():
                    pids.setdefault(alias, set()).update(found)
        per_process.append({alias: len(found) for alias, found in pids.items()})
    at_end = [run["meta"]["sessions_at_end"] for run in runs]
    if all(counts.get(alias) == 1 for counts in per_process + at_end for alias in ROLES):
        lines.append(
            "- Connections kept: in each measuring process, every query of the timed "
            "requests, all variants', ran on one connection to the primary and one to "
            "the standby (one backend PID each), the database's only sessions at the end."
        )
    else:

        def listed(counts: list[dict[str, int]]) -> str:
            return ", ".join(
                f"{role(alias)} {'/'.join(str(c.get(alias, 0)) for c in counts)}" for alias in ROLES
            )

        lines.append(
            "- Connections NOT kept as one per server: backend PIDs that ran the timed "
            f"requests' queries, per measuring process: {listed(per_process)}; sessions "
            f"on the database at the end: {listed(at_end)}."
        )
    waits = [
        entry["replay_wait_ns"]
        for run in runs
        for entry in run["results"]["pg_get_caught_up"]["variants"].values()
        if entry["replay_wait_ns"] is not None
    ]
    if waits:
        lines.append(
            f"- The standby had replayed a POST {duration(statistics.median(waits))} "
            "(median) after the POST returned: the wait before the caught-up GET, not "
            "timed (it includes the query for the primary's position)."
        )
    for variant, label in REQUEST_VARIANTS.items():
        queries = {
            sql: None
            for run in runs
            for name in REQUESTS
            for sql in run["results"][name]["variants"][variant]["library_sql"]
        }
        shown = "; ".join(f"`{sql}`" for sql in queries) if queries else "none"
        lines.append(f"- {label}: its own queries (through Django's cursors): {shown}.")
    return lines


def replica_tables(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    results = combine(runs)
    decisions = ("replica_decision", "replica_decision_pinned")
    lines = [
        "### Primary/replica: dynroute against django-multidb-router 0.11",
        "",
        "#### The routing decision",
        "",
        REPLICA_INTRO["decision"],
        "",
        "| decision | multidb 0.11 | dynroute | dynroute / multidb |",
        "|---|---|---|---|",
    ]
    for name in decisions:
        variants = results[name]["variants"]
        ratio = ratio_text(paired(runs, name, "dynroute", "multidb"))
        cells = f"{spread(variants['multidb'])} | {spread(variants['dynroute'])} | {ratio}"
        lines.append(f"| {LABELS[name]} | {cells} |")
    if all(name in counts for name in decisions):
        lines += [
            "",
            "Instructions per read + write (valgrind callgrind, `PYTHONHASHSEED=0`):",
            "",
            "| decision | multidb 0.11 | dynroute | dynroute / multidb |",
            "|---|---|---|---|",
        ]
        for name in decisions:
            c = counts[name]
            cells = (
                f"{c['multidb']:,.0f} | {c['dynroute']:,.0f} | "
                f"**{c['dynroute'] / c['multidb']:.2f}x**"
            )
            lines.append(f"| {LABELS[name]} | {cells} |")
    lines += ["", "#### A request through each middleware, on PostgreSQL and a standby", ""]
    if not all(name in results for name in REQUESTS):
        reason = runs[0]["meta"].get("postgresql_skipped", "left out (`--no-postgres`)")
        return [*lines, f"Not measured: {reason}."]
    meta, first = runs[0]["meta"], results[REQUESTS[0]]
    lines += [
        REPLICA_INTRO["request"].format(
            setting=json.dumps(meta["dynroute_setting"]),
            time_setting=json.dumps(meta["dynroute_time_setting"]),
            pin=meta["pin_seconds"],
            n=first["operations"],
            rounds=first["rounds"],
            processes=f" of each of {len(runs)} processes" if len(runs) > 1 else "",
            conn_max_age=meta["conn_max_age"],
        ),
        "",
        (
            "| request | multidb 0.11 | dynroute, pin by position | dynroute, pin by time "
            "| position / multidb | time / multidb | position - time |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name in REQUESTS:
        variants = results[name]["variants"]
        cells = [
            *(spread(variants[variant]) for variant in REQUEST_VARIANTS),
            ratio_text(paired(runs, name, "dynroute", "multidb"), 3),
            ratio_text(paired(runs, name, "dynroute_time", "multidb"), 3),
            difference_text(paired(runs, name, "dynroute", "dynroute_time", difference=True)),
        ]
        lines.append(f"| {LABELS[name]} | {' | '.join(cells)} |")
    if ROUND_TRIP in results:
        variants = results[ROUND_TRIP]["variants"]
        lines += [
            "",
            (
                f"One round trip ({LABELS[ROUND_TRIP]}), timed the same way: on the primary "
                f"{spread(variants['primary'])}, on the standby {spread(variants['standby'])}."
            ),
        ]
    short = {"multidb": "multidb", "dynroute": "position", "dynroute_time": "time"}
    lines += [
        "",
        "Where the queries of the timed requests went, added up over processes:",
        "",
        (
            "| request | the view's query: "
            + " | ".join(short[variant] for variant in REQUEST_VARIANTS)
            + " | the library's own queries per request: "
            + " | ".join(short[variant] for variant in REQUEST_VARIANTS)
            + " |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name in REQUESTS:
        cells = [
            *(reads_cell(runs, name, variant) for variant in REQUEST_VARIANTS),
            *(library_cell(runs, name, variant) for variant in REQUEST_VARIANTS),
        ]
        lines.append(f"| {LABELS[name]} | {' | '.join(cells)} |")
    return [*lines, "", *request_notes(runs)]


def replica_verdicts(runs: list[dict[str, Any]], counts: dict[str, dict[str, float]]) -> list[str]:
    """The goals against django-multidb-router 0.11, each with its figure."""
    lines: list[str] = []

    def check(goal: str, value: float, limit: float = 1.0) -> None:
        status = "met" if value <= limit else "NOT MET"
        lines.append(f"- {goal}: {value:.3f}x, {status} (goal ≤ {limit}x)")

    for name in ("replica_decision", "replica_decision_pinned"):
        label = f"decision, {LABELS[name].split(', ', 1)[1]}, dynroute / multidb"
        check(f"{label}, time", paired(runs, name, "dynroute", "multidb")[0])
        if name in counts:
            c = counts[name]
            check(f"{label}, instructions", c["dynroute"] / c["multidb"])
    if all(name in runs[0]["results"] for name in REQUESTS):
        lines += ["", *request_verdicts(runs)]
    lines.extend(f"- routed to the wrong database: {text}" for text in wrong_databases(runs))
    return lines


def request_verdicts(runs: list[dict[str, Any]]) -> list[str]:
    """The goal for whole requests, row by row, and what the position pin's query costs."""
    goals = ", ".join(LABELS[name].split(" (", 1)[0] for name in REQUEST_GOALS)
    lines = [
        (
            "Goal: a whole request through dynroute's middleware, pinning by position (the "
            f"default), takes **≤ 1.0x** what it takes through multidb's, for {goals}. "
            "Time on PostgreSQL and a standby, dynroute / multidb:"
        ),
        "",
    ]
    for name in REQUESTS:
        ratio = paired(runs, name, "dynroute", "multidb")[0]
        if name in REQUEST_GOALS:
            status = "**MET**" if ratio <= 1.0 else "**NOT MET**"
            lines.append(f"- {LABELS[name]}: {ratio:.3f}x, {status} (goal ≤ 1.0x)")
        else:
            lines.append(f"- {LABELS[name]}: {ratio:.3f}x (not one of the goal's rows)")
    time_ratios = "; ".join(
        f"{LABELS[name]} {paired(runs, name, 'dynroute_time', 'multidb')[0]:.3f}x"
        for name in REQUESTS
    )
    lines += [
        "",
        (
            'The same middleware pinning by time (`"pin": "time"`: no position read, '
            "the work multidb does), dynroute / multidb: " + time_ratios + "."
        ),
        "",
        *round_trip_note(runs),
    ]
    return lines


#: The server whose round trip pinning by position adds to each request row, if any.
ROUND_TRIP_SERVER = {
    "pg_get": None,
    "pg_post": "primary",
    "pg_get_after_post": "standby",
    "pg_get_caught_up": "standby",
}


def round_trip_note(runs: list[dict[str, Any]]) -> list[str]:
    """Why pinning by position costs more than multidb: the query it makes, measured."""
    results = combine(runs)
    floors = results[ROUND_TRIP]["variants"] if ROUND_TRIP in results else {}
    floor = ""
    if floors:
        floor = (
            f" One round trip, {LABELS[ROUND_TRIP]} (no request around it), takes "
            f"{duration(floors['primary']['median_ns'])} on the primary and "
            f"{duration(floors['standby']['median_ns'])} on the standby (median): the "
            'floor of "one query more".'
        )
    lines = [
        (
            "Why: multidb makes no database query to pin. It pins by time, with an "
            "unsigned cookie (any client can pin itself), and a client that wrote reads the "
            "primary for its whole pin window, whether the replica has caught up or not. "
            "Pinning by position reads a position, and that is one query by design (the "
            "issue allows one query per writing request, and one per replica when the "
            "cache is behind): a request that writes asks the primary for "
            "`pg_current_wal_insert_lsn()` for its cookie, and a GET carrying that cookie "
            "asks the standby how far it has replayed unless it knows already; in return "
            "the caught-up GET reads the standby, not the primary." + floor
        ),
        "",
        (
            "The gap in time per request: the median over rounds of the difference between "
            "two variants in the same round (quartiles in brackets). Position - time is what "
            "the position pin adds to the same middleware: its query, and for a pinned GET "
            "also the signature check (HMAC) of a cookie that changes with every write, "
            "where a time cookie's value is the same for a whole second, so its checked "
            "signature is mostly found in the middleware's cache. Time - multidb is "
            "dynroute's middleware without the position round trips against multidb's."
        ),
        "",
        (
            "| request | position - multidb | position - time | time - multidb "
            "| the round trip position adds: floor |"
        ),
        "|---|---|---|---|---|",
    ]
    for name in REQUESTS:
        server = ROUND_TRIP_SERVER[name]
        if server is None:
            added = "none"
        elif floors:
            added = f"{server}, {duration(floors[server]['median_ns'])}"
        else:
            added = f"{server}, not measured"
        cells = [
            difference_text(paired(runs, name, a, b, difference=True))
            for a, b in (
                ("dynroute", "multidb"),
                ("dynroute", "dynroute_time"),
                ("dynroute_time", "multidb"),
            )
        ]
        lines.append(f"| {LABELS[name]} | {' | '.join(cells)} | {added} |")
    return lines


def wrong_databases(runs: list[dict[str, Any]]) -> list[str]:
    """Each variant that read or wrote elsewhere than expected, once, with where it went."""
    wrong = []
    for run in runs:
        for name, result in run["results"].items():
            for variant, entry in result["variants"].items():
                if entry["right_database"]:
                    continue
                if name in REQUESTS:
                    expected = " or ".join(role(alias) for alias in entry["expected"])
                    wrong.append(
                        f"{LABELS[name]}, {variant}: the view's query went to "
                        f"{reads_cell([run], name, variant)}; expected: {expected}"
                    )
                else:
                    wrong.append(f"{name}/{variant} (answered {entry['answer']!r})")
    return list(dict.fromkeys(wrong))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


MARKER = "<!-- bench/run.py writes below this line -->"
REPLICA_MARKER = "<!-- bench/run.py: primary/replica section -->"


def write_script_section(path: Path, script: str, title: str, text: str) -> None:
    """Rewrite the section another script owns in BENCHMARKS.md, between its markers.

    A section not there yet goes just before this script's part.
    """
    begin, end = f"<!-- bench/{script}: begin -->", f"<!-- bench/{script}: end -->"
    existing = path.read_text()
    section = f"{begin}\n\n{title}\n\n{text}\n\n{end}"
    if begin in existing:
        head, _, rest = existing.partition(begin)
        _, _, tail = rest.partition(end)
        path.write_text(head + section + tail)
    else:
        head, _, tail = existing.partition(MARKER)
        path.write_text(head.rstrip() + "\n\n" + section + "\n\n" + MARKER + tail)


def write_sections(output: Path, original: str | None, replicas: str | None) -> None:
    """Rewrite the generated sections given, keep the introduction and the other section."""
    existing = output.read_text() if output.exists() else ""
    intro, _, generated = existing.partition(MARKER)
    if not generated:
        intro = existing or "# Benchmarks\n"
    old_original, _, old_replicas = generated.partition(REPLICA_MARKER)
    sections = [
        intro.rstrip(),
        MARKER,
        (original if original is not None else old_original).strip(),
        REPLICA_MARKER,
        (replicas if replicas is not None else old_replicas).strip(),
    ]
    output.write_text("\n\n".join(sections) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few repetitions; writes only to an --output given",
    )
    parser.add_argument("--processes", type=int, default=3, help="measuring processes (full run)")
    parser.add_argument("--no-postgres", action="store_true", help="leave out PostgreSQL")
    parser.add_argument("--no-instructions", action="store_true", help="skip valgrind counts")
    parser.add_argument("--fresh", action="store_true", help="recreate the throwaway venvs")
    parser.add_argument(
        "--part",
        choices=("all", "original", "replicas"),
        default="all",
        help="original: against django-dynamic-db-router 0.3.0 and .using(); "
        "replicas: against django-multidb-router 0.11 (default: both)",
    )
    parser.add_argument(
        "--output", type=Path, help="the file whose sections it rewrites (default: BENCHMARKS.md)"
    )
    arguments = parser.parse_args()
    original = arguments.part in ("all", "original")
    replicas = arguments.part in ("all", "replicas")

    ensure_venv(fresh=arguments.fresh)
    if replicas:
        ensure_multidb_venv(fresh=arguments.fresh)
    extra = ["--no-postgres"] if arguments.no_postgres else []
    runs: list[dict[str, Any]] = []
    replica_runs: list[dict[str, Any]] = []
    quick = ["--quick"] if arguments.quick else []
    processes = 1 if arguments.quick else arguments.processes
    for index in range(processes):
        print(f"measuring, process {index + 1} of {processes} ...")
        if original:
            runs.append(measure(*quick, *extra))
        if replicas:
            replica_runs.append(measure_replicas(*quick, postgres=not arguments.no_postgres))
    counts: dict[str, dict[str, float]] = {}
    if not arguments.quick and not arguments.no_instructions and shutil.which("valgrind"):
        print("counting instructions with valgrind (a few minutes) ...")
        counts = count_instructions(original=original, replicas=replicas)
    command = "python3 bench/run.py" + (" --quick" if arguments.quick else "")
    if arguments.part != "all":
        command += f" --part {arguments.part}"
    scope = "quick: 3 rounds, few operations" if arguments.quick else f"{processes} processes"
    now = dt.datetime.now(dt.timezone.utc)
    original_text = original_report(runs, counts, command, scope, now) if original else None
    replica_text = None
    if replicas:
        meta = replica_runs[0]["meta"]
        header = [
            f"Command: `{command}` ({scope}), run {now:%Y-%m-%d %H:%M} UTC.",
            f"Python {meta['python']}, Django {meta['django']}, {meta['multidb']}; {machine()}.",
            (
                f"PostgreSQL {meta['postgresql']} on the same machine and a streaming standby "
                f"of it started by the run; psycopg {meta['psycopg']}."
                if "postgresql" in meta
                else "PostgreSQL: not measured."
            ),
        ]
        replica_text = "\n".join(
            [
                *header,
                "",
                *replica_tables(replica_runs, counts),
                "",
                "#### Goals against django-multidb-router 0.11",
                "",
                *replica_verdicts(replica_runs, counts),
                "",
            ]
        )
    print()
    print("\n\n".join(text for text in (original_text, replica_text) if text is not None))
    if not arguments.quick or arguments.output is not None:
        output = arguments.output or ROOT / "BENCHMARKS.md"
        write_sections(output, original_text, replica_text)
        print(f"written to {output}")
    return 0


def original_report(
    runs: list[dict[str, Any]],
    counts: dict[str, dict[str, float]],
    command: str,
    scope: str,
    now: dt.datetime,
) -> str:
    """The section against django-dynamic-db-router 0.3.0 and ``.using()``."""
    meta = runs[0]["meta"]
    report = [
        *micro_table(runs, counts),
        "",
        *query_table(runs, counts),
        "",
        *write_hook_table(runs, counts),
        "",
        *runtime_table(runs),
    ]
    server = (
        "PostgreSQL 15 on the same machine." if meta["postgresql"] else "PostgreSQL: not measured."
    )
    header = [
        f"Command: `{command}` ({scope}), run {now:%Y-%m-%d %H:%M} UTC.",
        f"Python {meta['python']}, Django {meta['django']}, {meta['original']}; {machine()}.",
        server,
    ]
    return "\n".join([*header, "", *report, "", "### Goals", "", *verdicts(runs, counts), ""])


if __name__ == "__main__":
    sys.exit(main())
