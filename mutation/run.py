"""Mutation testing of src/dynroute/ with mutmut: the score, and every mutant that survives.

Run by ``nox -s mutation`` (all mutants) and ``nox -s mutation_sample`` (a fixed sample,
in CI). Each mutant is first tried against the tests on SQLite; the ones that survive
(or that no SQLite test reaches) are tried again on PostgreSQL, which runs the tests
SQLite skips (killed server connections, pools). A mutant killed on either is killed.

A survivor must be listed in ``mutation/equivalents.toml`` with the reason no test
can kill it; any other survivor fails the run. The score is the share of mutants
killed among those not listed as equivalent. The report, with the diff of every
survivor, is written to ``mutants/report.md``.

Usage: ``python mutation/run.py [--sample N] [--max-children N] [--backends a,b]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
EQUIVALENTS = ROOT / "mutation" / "equivalents.toml"
REPORT = MUTANTS / "report.md"

# mutmut's exit codes (mutmut.stats.status_by_exit_code), grouped by what they mean here.
KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout"}
KILLED |= {255: "timeout", -9: "timeout", -11: "crashed"}
NOT_REACHED = {5, 33}  # no test runs the mutated function


@dataclass
class Mutant:
    """One mutant: its name, what it changes, and what happened to it."""

    name: str
    status: str = "not checked"
    backend: str = ""
    change: str = ""
    diff: str = ""


def main() -> int:
    """Run the passes, then judge and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="only this many mutants")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()
    backends = [backend for backend in options.backends.split(",") if reachable(backend)]
    started = time.monotonic()
    os.chdir(ROOT)
    shutil.rmtree(MUTANTS, ignore_errors=True)
    equivalents = load_equivalents()

    names: list[str] = []
    if options.sample:
        # mutmut makes its mutants when it runs: a run of one small function makes them all.
        mutmut(
            "run",
            "dynroute.routing._factory.xǁ_Unsetǁ__repr__*",
            backend=backends[0],
            options=options,
        )
        names = sample(all_results(), options.sample)
    results: dict[str, Mutant] = {}
    for number, backend in enumerate(backends):
        if number == 0:
            tried = names
        else:
            tried = [
                m.name
                for m in results.values()
                if m.status not in KILLED.values() and m.name not in equivalents
            ]
            if not tried:
                break
            # Which tests reach which function is measured again on this backend.
            (MUTANTS / "mutmut-stats.json").unlink(missing_ok=True)
        mutmut("run", *tried, backend=backend, options=options)
        for name, code in all_results().items():
            if names and name not in names:
                continue
            status = describe(code)
            mutant = results.setdefault(name, Mutant(name))
            if number == 0 or name in tried:
                mutant.status, mutant.backend = status, backend
    for mutant in results.values():
        if mutant.status not in KILLED.values():
            mutant.diff, mutant.change = diff_of(mutant.name)
    return judge(results, equivalents, time.monotonic() - started, sampled=bool(names))


def reachable(backend: str) -> bool:
    """Whether ``backend``'s test server answers; off CI a missing one is skipped, and noted.

    Raises:
        SystemExit: On CI (``CI=true``), the server does not answer.
    """
    if backend != "postgresql":
        return True  # SQLite needs no server; the mutants run on these two only
    address = (
        os.environ.get("DYNROUTE_PG_HOST", "127.0.0.1"),
        int(os.environ.get("DYNROUTE_PG_PORT", "5432")),
    )
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as error:
        where = f"{address[0]}:{address[1]}"
        what = f"mutation testing's PostgreSQL pass: no server at {where} ({error})"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            msg = f"CI=true and {what}"
            raise SystemExit(msg) from None
        print(f"skipped: {what}")
        if log := os.environ.get("DYNROUTE_SKIPPED"):
            with Path(log).open("a", encoding="utf-8") as file:
                file.write(f"{what}\n")
        return False
    return True


#: The characters mutmut's spinner draws at the start of its progress lines.
_SPINNER = frozenset("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


def mutmut(*args: str, backend: str, options: argparse.Namespace) -> None:
    """Run mutmut with the test databases of ``backend``, one set per test process."""
    env = {
        **os.environ,
        "DYNROUTE_TEST_DB": backend,
        "DYNROUTE_TEST_DB_PER_PROCESS": "1",
        "DYNROUTE_HYPOTHESIS_NO_SHRINK": "1",
        # tests/test_fleet.py on 10 databases (20 for fan-out), not 100: it runs per mutant.
        "DYNROUTE_FLEET_SIZE": "10",
    }
    command = ["mutmut", *args, "--max-children", str(options.max_children)]
    print(f"+ DYNROUTE_TEST_DB={backend} {' '.join(command[:6])}{' ...' * (len(command) > 6)}")
    # mutmut draws a progress line many times a second: keep only its last screen.
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    tail = done.stdout.replace("\r", "\n").strip().splitlines()[-3:]
    print("\n".join(f"  {line}" for line in tail))
    if done.returncode != 0:
        # Its output without the progress lines: a failing clean run shows its test there.
        lines = done.stdout.replace("\r", "\n").splitlines()
        kept = [line for line in lines if line.strip() and line.lstrip()[:1] not in _SPINNER]
        print("\n".join(kept[-200:]), done.stderr[-4000:], sep="\n")
        msg = f"mutmut {args[0]} failed ({done.returncode})"
        raise SystemExit(msg)


def all_results() -> dict[str, int | None]:
    """Every mutant mutmut made, with its exit code (``None``: not run)."""
    results: dict[str, int | None] = {}
    for meta in sorted((MUTANTS / "src").rglob("*.py.meta")):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def sample(results: dict[str, int | None], size: int) -> list[str]:
    """A fixed sample: the same names for the same code, spread over every module."""
    ranked = sorted(results, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return sorted(ranked[:size])


def describe(code: int | None) -> str:
    """What mutmut's exit code means for the mutant."""
    if code is None:
        return "not checked"
    if code in KILLED:
        return KILLED[code]
    if code in NOT_REACHED:
        return "no tests"
    return "survived" if code == 0 else f"suspicious ({code})"


def diff_of(name: str) -> tuple[str, str]:
    """The mutant's diff, and its changed lines (what equivalents.toml records)."""
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant  # noqa: PLC0415

    try:
        diff = get_diff_for_mutant(name, path=find_mutant(name).path)
    except FileNotFoundError:  # the source changed during the run: mutmut made new mutants
        return "(no diff: the source changed during the run)", "?"
    changed = [line[1:].strip() for line in diff.splitlines() if line.startswith("+ ")]
    changed += [line[1:].strip() for line in diff.splitlines() if line.startswith("+\t")]
    return diff, " / ".join(changed)


def load_equivalents() -> dict[str, dict[str, str]]:
    """The listed equivalent mutants, by name."""
    entries = tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])
    return {entry["mutant"]: entry for entry in entries}


def judge(
    results: dict[str, Mutant],
    equivalents: dict[str, dict[str, str]],
    seconds: float,
    *,
    sampled: bool,
) -> int:
    """Print the score and the unexplained survivors; write the report; 0 if all is well."""
    killed = [m for m in results.values() if m.status in KILLED.values()]
    alive = [m for m in results.values() if m.status not in KILLED.values()]
    listed = [m for m in alive if equivalents.get(m.name, {}).get("change") == m.change]
    unexplained = [m for m in alive if m not in listed]
    # An entry whose mutant changed no longer says anything: it fails the run. One whose
    # mutant was killed is reported, not failed: a mutant that really is equivalent is
    # only ever killed by a test failing by chance (or a timeout on a busy machine).
    stale = [
        name
        for name, entry in equivalents.items()
        if name in results
        and results[name] not in killed
        and entry["change"] != results[name].change
    ]
    killed_listed = [name for name in equivalents if name in results and results[name] in killed]
    considered = len(results) - len(listed)
    score = len(killed) / considered if considered else 1.0
    timeouts = sum(m.status != "killed" for m in killed)
    by_backend = {b: sum(m.backend == b for m in killed) for b in {m.backend for m in killed}}
    lines = [
        f"# Mutation testing of src/dynroute/ ({'a sample' if sampled else 'every mutant'})",
        "",
        f"- mutants: {len(results)}",
        f"- killed: {len(killed)} ({timeouts} by timing out), by backend: {by_backend}",
        f"- survivors listed as equivalent: {len(listed)}",
        f"- survivors not explained: {len(unexplained)}",
        f"- score (killed / mutants not equivalent): {score:.1%}",
        f"- time: {seconds / 60:.1f} min",
        "",
    ]
    for title, group in (("Not explained", unexplained), ("Equivalent", listed)):
        lines += [f"## {title}", ""]
        for mutant in sorted(group, key=lambda m: m.name):
            reason = equivalents.get(mutant.name, {}).get("reason", "")
            lines += [f"### {mutant.name}: {mutant.status}", reason, "```diff", mutant.diff, "```"]
    if stale:
        lines += ["## Stale entries in mutation/equivalents.toml", *(f"- {n}" for n in stale)]
    if killed_listed:
        lines += ["## Listed as equivalent, killed this run", *(f"- {n}" for n in killed_listed)]
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))
    for mutant in unexplained:
        print(f"NOT EXPLAINED {mutant.name} ({mutant.status}): {mutant.change}")
    for name in stale:
        print(f"STALE ENTRY {name}: its mutant changed; update equivalents.toml")
    for name in killed_listed:
        print(f"LISTED BUT KILLED {name}: a chance failure, or the entry is wrong; look at it")
    print(f"report: {REPORT.relative_to(ROOT)}")
    return 1 if unexplained or stale or score < 0.9 else 0


if __name__ == "__main__":
    sys.exit(main())
