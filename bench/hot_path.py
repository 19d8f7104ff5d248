"""The hot path in instructions, now against an earlier commit: did a change cost anything?

Usage (from the repository root, after ``python3 bench/run.py`` has made its venvs)::

    python3 bench/hot_path.py                       # against 08a899b (before the reshaping)
    python3 bench/hot_path.py --baseline REV --seeds 0 1 2

The baseline's ``src/`` and ``bench/`` are extracted with ``git archive`` into a
temporary folder, and each tree's own ``bench/measure.py`` and
``bench/measure_replicas.py`` run its own ``src/`` (the scripts may reach private
modules, which a reshaping moves). Each row is counted by valgrind's callgrind: N
operations minus 0 in the same script, divided by N, once per ``PYTHONHASHSEED``
(hash seeds move some rows by a few percent: the median of three settles them). The
rows are the ones a query pays for: entering and leaving a block, building one, the
router's decision, a routed query, the write hook, and the primary/replica decision;
the two requests through ``PrimaryReplicaMiddleware`` are shown too.

The garbage collector is off in every measured process (``bench/nogc``): with it on,
a full collection (about 20 million instructions with Django loaded) lands among a
row's operations or not depending on how many objects were made before them, which
any change to the code moves. On 08eca4d it moved enter + exit of a block from 5,542
to 6,537 instructions on two hash seeds of three, and not on the third; with the
collector off, the three seeds agree within 0.5%.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import VENV, VENV_MULTIDB, instructions, venv_python

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "08a899b"  # the last commit before the house was reshaped into folders

#: (script, measure/variant, operations, label)
ROWS = [
    ("measure.py", "enter_exit_read/dynroute", 20000, "enter + exit a block, read-only"),
    ("measure.py", "enter_exit_readwrite/dynroute", 20000, "enter + exit a block, read-write"),
    ("measure.py", "new_block/dynroute", 20000, "`with in_database(alias, write=True)`"),
    ("measure.py", "router_decision/dynroute", 20000, "router decision, read + write"),
    ("measure.py", "orm_sqlite/dynroute", 2000, "routed `Item.objects.count()` (SQLite)"),
    ("measure.py", "write_hook/hooked", 2000, "the same with the write hook installed"),
    ("measure_replicas.py", "replica_decision/dynroute", 20000, "replica decision"),
    (
        "measure_replicas.py",
        "replica_decision_pinned/dynroute",
        20000,
        "replica decision, pinned to the primary",
    ),
    ("measure_replicas.py", "request_get/dynroute_middleware", 200, "GET through the middleware"),
    ("measure_replicas.py", "request_post/dynroute_middleware", 200, "POST through it"),
]
#: What each script's count of 0 operations starts from (its set-up, subtracted).
BASES = {
    "measure.py": "enter_exit_read/dynroute",
    "measure_replicas.py": "replica_decision/dynroute",
}


def per_operation(trees: dict[str, Path], seeds: list[int]) -> dict[tuple[str, str], list[float]]:
    """Instructions per operation of every row, tree and seed: {(tree, variant): [per seed]}."""
    jobs: dict[tuple[str, str, str, int], tuple[str, int, str, Path, int]] = {}
    for name, tree in trees.items():
        for seed in seeds:
            for script, variant in BASES.items():
                jobs[name, script, "base", seed] = (variant, 0, script, tree, seed)
            for script, variant, n, _ in ROWS:
                jobs[name, script, variant, seed] = (variant, n, script, tree, seed)

    def count(job: tuple[str, int, str, Path, int]) -> int:
        variant, n, script, tree, seed = job
        return instructions(variant, n, script, tree=tree, seed=seed, collector=False)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        totals = dict(zip(jobs, pool.map(count, jobs.values()), strict=True))
    results: dict[tuple[str, str], list[float]] = {}
    for name in trees:
        for script, variant, n, _ in ROWS:
            results[name, variant] = [
                (totals[name, script, variant, seed] - totals[name, script, "base", seed]) / n
                for seed in seeds
            ]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    arguments = parser.parse_args()
    if not venv_python(VENV).exists() or not venv_python(VENV_MULTIDB).exists():
        print("run `python3 bench/run.py --quick` first: it makes the venvs this uses")
        return 2
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src", "bench"], check=True, capture_output=True, text=True
    ).stdout.strip()
    now = f"{head}{' + uncommitted changes' if dirty else ''}"
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "archive", arguments.baseline, "src", "bench"],
            check=True,
            capture_output=True,
            cwd=ROOT,
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        trees = {"before": Path(folder), "now": ROOT}
        results = per_operation(trees, arguments.seeds)
    seeds = ", ".join(map(str, arguments.seeds))
    print(
        f"Instructions per operation (callgrind; median over PYTHONHASHSEED {seeds}), "
        f"before = {arguments.baseline}, now = {now}, Python {sys.version.split()[0]}:"
    )
    print()
    print("| operation | before | now | now / before | per seed, before | per seed, now |")
    print("|---|---|---|---|---|---|")
    for _, variant, _, label in ROWS:
        before, now_ = results["before", variant], results["now", variant]
        ratio = statistics.median(now_) / statistics.median(before)
        print(
            f"| {label} | {statistics.median(before):,.0f} | {statistics.median(now_):,.0f} "
            f"| **{ratio:.4f}x** | {' / '.join(f'{v:,.0f}' for v in before)} "
            f"| {' / '.join(f'{v:,.0f}' for v in now_)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
