"""Benchmark dynroute against django-dynamic-db-router 0.3.0 and plain ``.using()``.

Usage (from the repository root)::

    python3 bench/run.py            # full run; writes BENCHMARKS.md
    python3 bench/run.py --quick    # a few repetitions, to check that it runs

It creates ``bench/.venv-original`` with django-dynamic-db-router 0.3.0 from PyPI
(whose ``dynamic_db_router`` module would clash with dynroute's drop-in), then runs
``bench/measure.py`` there, which loads dynroute from ``src/`` next to it and times
both in one process, interleaved. The full run repeats that in several processes and,
where valgrind is installed, also counts instructions per operation (deterministic,
unlike time on a shared machine). PostgreSQL figures need the server the test suite
uses; without it they are left out.
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
REQUIREMENTS = [
    "django-dynamic-db-router==0.3.0",
    "django>=4.2",
    "asgiref>=3.6",
    "typing-extensions>=4.12",
    "psycopg[binary]>=3.1",
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
}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


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


def measure(*arguments: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(venv_python()), str(BENCH / "measure.py"), *arguments],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def instructions(variant: str, n: int) -> int:
    """Instructions executed by ``measure.py --count variant n`` (valgrind)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(venv_python()),
            str(BENCH / "measure.py"),
            "--no-postgres",
            "--count",
            variant,
            str(n),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    msg = f"no instruction count from valgrind for {variant}"
    raise RuntimeError(msg)


def count_instructions() -> dict[str, dict[str, float]]:
    """Instructions per operation, for the CPU-bound measures."""
    jobs = {"base": ("enter_exit_read/dynroute", 0)}
    for measure_name, n in COUNTED.items():
        for variant in COUNTED_VARIANTS.get(measure_name, ["dynroute", "original"]):
            jobs[f"{measure_name}/{variant}"] = (f"{measure_name}/{variant}", n)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = dict(
            zip(jobs, pool.map(lambda job: instructions(*job), jobs.values()), strict=True)
        )
    base = totals.pop("base")
    counts: dict[str, dict[str, float]] = {}
    for key, total in totals.items():
        measure_name, variant = key.split("/")
        counts.setdefault(measure_name, {})[variant] = (total - base) / COUNTED[measure_name]
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
    runs: list[dict[str, Any]], measure_name: str, a: str, b: str
) -> tuple[float, float, float]:
    """Median and quartiles of a/b over rounds: each round timed both, one after the other."""
    ratios = [
        x / y
        for run in runs
        for x, y in zip(
            run["results"][measure_name]["variants"][a]["samples_ns"],
            run["results"][measure_name]["variants"][b]["samples_ns"],
            strict=True,
        )
    ]
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few repetitions; writes nothing")
    parser.add_argument("--processes", type=int, default=3, help="measuring processes (full run)")
    parser.add_argument("--no-postgres", action="store_true", help="leave out PostgreSQL")
    parser.add_argument("--no-instructions", action="store_true", help="skip valgrind counts")
    parser.add_argument("--fresh", action="store_true", help="recreate the throwaway venv")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    arguments = parser.parse_args()

    ensure_venv(fresh=arguments.fresh)
    extra = ["--no-postgres"] if arguments.no_postgres else []
    if arguments.quick:
        runs = [measure("--quick", *extra)]
    else:
        runs = []
        for index in range(arguments.processes):
            print(f"measuring, process {index + 1} of {arguments.processes} ...")
            runs.append(measure(*extra))
    meta = runs[0]["meta"]
    counts: dict[str, dict[str, float]] = {}
    if not arguments.quick and not arguments.no_instructions and shutil.which("valgrind"):
        print("counting instructions with valgrind (a few minutes) ...")
        counts = count_instructions()
    report = [
        *micro_table(runs, counts),
        "",
        *query_table(runs, counts),
        "",
        *write_hook_table(runs, counts),
        "",
        *runtime_table(runs),
    ]
    command = "python3 bench/run.py" + (" --quick" if arguments.quick else "")
    scope = "quick: 3 rounds, few operations" if arguments.quick else f"{len(runs)} processes"
    now = dt.datetime.now(dt.timezone.utc)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
    server = (
        "PostgreSQL 15 on the same machine." if meta["postgresql"] else "PostgreSQL: not measured."
    )
    header = [
        f"Command: `{command}` ({scope}), run {now:%Y-%m-%d %H:%M} UTC.",
        f"Python {meta['python']}, Django {meta['django']}, {meta['original']}; {machine}.",
        server,
    ]
    text = "\n".join([*header, "", *report, "", "### Goals", "", *verdicts(runs, counts), ""])
    print()
    print(text)
    if not arguments.quick:
        existing = arguments.output.read_text() if arguments.output.exists() else ""
        marker = "<!-- bench/run.py writes below this line -->"
        intro = existing.split(marker)[0] if marker in existing else existing or "# Benchmarks\n"
        arguments.output.write_text(f"{intro.rstrip()}\n\n{marker}\n\n{text}")
        print(f"written to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
