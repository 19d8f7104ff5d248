"""What dynroute.signals cost a block with no receiver: enter + exit, against a commit before them.

Usage (from the repository root)::

    python3 bench/signals_overhead.py                  # against 56fd959 (before signals)
    python3 bench/signals_overhead.py --baseline REV --runs 3

The baseline's ``src/`` is extracted with ``git archive`` into a temporary folder; each
measurement runs in a fresh process that imports dynroute from one tree. Times are
interleaved (baseline, current, current with a receiver) in each of ``--runs`` rounds,
and their median per round is printed; instruction counts (valgrind callgrind,
``PYTHONHASHSEED=0``: N entries minus 0 entries, per entry) settle what time cannot on
a shared machine. The block is ``in_database("other")`` on a configured alias, entered
the usual way: ``with in_database("other"): pass`` (the block cache's lookup included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "56fd959"  # the last commit before dynroute.signals
N_COUNT = 20000


def child(src: str, variant: str, n: int, *, timed: bool) -> None:
    """In a fresh process: enter and exit the block ``n`` times; print ns per entry if timed."""
    sys.path.insert(0, src)
    import django  # noqa: PLC0415 - after sys.path is set
    from django.conf import settings  # noqa: PLC0415

    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        DATABASE_ROUTERS=["dynroute.DynamicDbRouter"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    import dynroute  # noqa: PLC0415

    assert str(Path(dynroute.__file__).parent.parent) == src, dynroute.__file__  # noqa: S101
    in_database = dynroute.in_database
    if variant == "listening":
        from dynroute.signals import block_exited  # noqa: PLC0415 - only in the current tree

        block_exited.connect(lambda **_: None, weak=False)
    for _ in range(100):  # the first entries check the router and the alias
        with in_database("other"):
            pass
    if not timed:
        for _ in range(n):
            with in_database("other"):
                pass
        return
    best: list[float] = []
    for _ in range(15):
        start = time.perf_counter_ns()
        for _ in range(n):
            with in_database("other"):
                pass
        best.append((time.perf_counter_ns() - start) / n)
    print(statistics.median(best))


def run_child(src: Path, variant: str, n: int, *, timed: bool, valgrind: bool = False) -> str:
    command = [sys.executable, __file__, "--child", str(src), variant, str(n)]
    if timed:
        command.append("--timed")
    if valgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    done = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if valgrind:
        for line in done.stderr.splitlines():
            if "Collected :" in line:
                return line.rsplit(":", 1)[1].strip()
        msg = f"no instruction count from valgrind: {done.stderr[-500:]}"
        raise RuntimeError(msg)
    return done.stdout.strip()


def instructions(src: Path, variant: str) -> float:
    """Instructions per enter + exit: N entries minus 0 entries, divided by N."""
    full = int(run_child(src, variant, N_COUNT, timed=False, valgrind=True))
    base = int(run_child(src, variant, 0, timed=False, valgrind=True))
    return (full - base) / N_COUNT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=3, help="rounds of timing (default 3)")
    parser.add_argument("--child", nargs=3, metavar=("SRC", "VARIANT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--timed", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        src, variant, n = arguments.child
        child(src, variant, int(n), timed=arguments.timed)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "archive", arguments.baseline, "src"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        trees = {
            f"before ({arguments.baseline})": (Path(folder) / "src", "plain"),
            "now, no receiver": (ROOT / "src", "plain"),
            "now, a receiver connected": (ROOT / "src", "listening"),
        }
        print(f"enter + exit of `with in_database('other'): pass`, Python {sys.version.split()[0]}")
        rounds: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(arguments.runs):
            for name, (src, variant) in trees.items():
                rounds[name].append(float(run_child(src, variant, 20000, timed=True)))
            before, now = (rounds[name][round_] for name in list(trees)[:2])
            print(
                f"  round {round_ + 1}: "
                + ", ".join(f"{name} {values[round_]:.0f} ns" for name, values in rounds.items())
                + f"; no receiver / before = {now / before:.3f}x"
            )
        ratios = [
            now / before
            for before, now in zip(*(rounds[name] for name in list(trees)[:2]), strict=True)
        ]
        print(f"  time ratio, median of {arguments.runs} rounds: {statistics.median(ratios):.3f}x")
        if shutil.which("valgrind"):
            counts = {name: instructions(src, variant) for name, (src, variant) in trees.items()}
            first = next(iter(counts.values()))
            for name, count in counts.items():
                print(f"  instructions, {name}: {count:,.0f} ({count / first:.3f}x)")
        else:
            print("  instructions: valgrind is not installed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
