"""Test, type-check and lint dynroute: ``nox`` runs everything CI runs.

- ``tests``: the suite on each supported Django, each time on SQLite, PostgreSQL and
  MariaDB (server suites skip with a reason when no server answers, and fail on CI).
- ``typing``: mypy and pyright, strict, on ``src/`` and ``tests/typing/``.
- ``lint``: ruff, and import-linter's contracts (the rooms of ``src/dynroute`` in layers,
  no loop, a room's modules imported only through its face).
- ``browser``: the django-debug-toolbar routing panel, its page opened in headless
  Chromium (Debian's ``chromium`` and ``chromium-driver``; a screenshot lands in
  ``test-output/``).
- ``docs``: the documentation site, built with ``--strict`` (its examples run as tests
  in ``tests``).
- ``reliability``: the state machine, stress, fault and hostile-input suites at full
  size on PostgreSQL; prints the figures the README quotes.
- ``mutation``: mutation testing of src/dynroute/ (mutmut), every mutant; prints the
  score. ``mutation_sample``: a fixed sample of them, in CI.
- ``bench``: the benchmark in quick mode, to keep it working (no figure is asserted).
- ``summary``: what the run skipped for a missing piece, and why (last).

Off CI, a suite whose piece is missing here (a database server, the MariaDB client
library that ``mysqlclient`` builds against, Chromium) is skipped, with the reason,
and listed by ``summary``; with ``CI=true`` it fails instead, naming what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = [
    "lint",
    "typing",
    "docs",
    "tests",
    "browser",
    "reliability",
    "mutation_sample",
    "bench",
    "summary",
]

PYPROJECT = nox.project.load_toml("pyproject.toml")
ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Where this run's test sessions note the suites they skipped for a missing piece
#: (tests/helpers.py appends to it; ``summary`` prints it). Emptied when nox starts.
SKIPPED = Path(".nox", "skipped.txt").resolve()
SKIPPED.unlink(missing_ok=True)
MARIADB_LIBRARY = (
    "mysqlclient could not be built: install MariaDB's client library and pkg-config "
    "(apt-get install libmariadb-dev pkg-config)"
)

# (Python, Django): every supported Django, each on a Python it supports.
MATRIX = [("3.10", "4.2"), ("3.11", "5.2"), ("3.12", "6.0"), ("3.13", "6.1")]
BACKENDS = ("sqlite", "postgresql", "mariadb")
LATEST_PYTHON, LATEST_DJANGO = MATRIX[-1]


def _use_pyenv_interpreters() -> None:
    """Let nox find Pythons that pyenv installed but did not put on PATH.

    pyenv's shims answer ``python3.12`` only for the versions in ``PYENV_VERSION``;
    list the newest installed patch of each Python the matrix needs.
    """
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    installed = _pyenv("versions", "--bare", "--skip-aliases").split()
    current = _pyenv("version-name").strip()
    chosen = [current] if current else []
    for python, _ in MATRIX:
        patches = [v for v in installed if re.fullmatch(rf"{re.escape(python)}\.\d+", v)]
        if patches:
            chosen.append(max(patches, key=lambda v: int(v.rsplit(".", 1)[1])))
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(chosen))


def _pyenv(*args: str) -> str:
    done = subprocess.run(["pyenv", *args], capture_output=True, text=True, check=False)  # noqa: S603, S607 - pyenv from PATH, fixed arguments
    return done.stdout


_use_pyenv_interpreters()


def _install_project(
    session: nox.Session, django: str, *groups: str, extras: tuple[str, ...] = ("postgresql",)
) -> None:
    """Install dynroute (editable) with ``extras``, a Django, and the dependency groups."""
    dependencies = [
        requirement
        for group in groups
        for requirement in nox.project.dependency_groups(PYPROJECT, group)
    ]
    listed = f"[{','.join(extras)}]" if extras else ""
    session.install("-e", f".{listed}", f"django~={django}.0", *dependencies)


def _install_mysql_driver(session: nox.Session) -> bool:
    """Install the ``mysql`` extra's driver; return whether it could be built here.

    ``mysqlclient`` compiles against MariaDB's client library: without it, off CI, the
    MariaDB suite is skipped (and listed by ``summary``); on CI the session fails.
    """
    try:
        session.install(*PYPROJECT["project"]["optional-dependencies"]["mysql"])
    except CommandFailed:
        if ON_CI:
            session.error(f"CI=true and {MARIADB_LIBRARY}")
        _note_skipped(f"the mariadb suite (session {session.name}): {MARIADB_LIBRARY}")
        return False
    return True


def _note_skipped(what: str) -> None:
    SKIPPED.parent.mkdir(parents=True, exist_ok=True)
    with SKIPPED.open("a", encoding="utf-8") as file:
        file.write(f"{what}\n")


@nox.session
@nox.parametrize(
    ("python", "django"),
    MATRIX,
    ids=[f"django{django}" for _, django in MATRIX],
)
def tests(session: nox.Session, django: str) -> None:
    """Run the suite on one Django, against SQLite, PostgreSQL and MariaDB.

    Coverage is measured on the newest Django and SQLite only (its tracing slows a
    run by a quarter; a CI run must stay under 30 minutes). The fleet suite (a fleet
    of 200 databases, created and dropped) runs on every backend with the newest
    Django, and on SQLite with the others: what differs between Django versions there
    (the migration executor) is the same on every backend, and the server parts
    (locks, CREATE DATABASE) are not Django's.
    """
    _install_project(session, django, "test")
    backends = [b for b in BACKENDS if b != "mariadb" or _install_mysql_driver(session)]
    latest = django == LATEST_DJANGO
    coverage = ["coverage", "run", "--parallel-mode", "-m"]
    if latest:
        session.run("coverage", "erase")
    for backend in backends:
        session.log(f"--- Django {django}, {backend} ---")
        fleet = [] if latest or backend == "sqlite" else ["--deselect", "tests/test_fleet.py"]
        measured = latest and backend == "sqlite"
        session.run(
            *(coverage if measured else []),
            "pytest",
            *fleet,
            *session.posargs,
            env={"DYNROUTE_TEST_DB": backend, "DYNROUTE_SKIPPED": str(SKIPPED)},
        )
    if latest:
        session.run("coverage", "combine", "--quiet")
        session.run("coverage", "report")


RELIABILITY_SUITES = (
    "tests/test_state_machine.py",
    "tests/test_stress.py",
    "tests/test_faults.py",
    "tests/test_hostile_input.py",
)


@nox.session(python=LATEST_PYTHON)
def reliability(session: nox.Session) -> None:
    """Run the reliability suites at full size on PostgreSQL and print their figures."""
    _install_project(session, LATEST_DJANGO, "test")
    session.run(
        "pytest",
        *RELIABILITY_SUITES,
        "--timeout=1800",  # the state machine at full size takes minutes
        *session.posargs,
        env={
            "DYNROUTE_TEST_DB": "postgresql",
            "DYNROUTE_RELIABILITY": "full",
            "DYNROUTE_SKIPPED": str(SKIPPED),
        },
    )


@nox.session(python=LATEST_PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation testing of src/dynroute/ with mutmut: every mutant, on SQLite then PostgreSQL.

    Prints the score and fails on a survivor not listed, with its reason, in
    mutation/equivalents.toml. Arguments go to mutation/run.py (``-- --max-children 4``).
    """
    _install_project(session, LATEST_DJANGO, "test", "mutation")
    session.run(
        "python", "mutation/run.py", *session.posargs, env={"DYNROUTE_SKIPPED": str(SKIPPED)}
    )


@nox.session(python=LATEST_PYTHON)
def mutation_sample(session: nox.Session) -> None:
    """Mutation testing of a fixed sample of mutants: what CI runs of ``mutation``."""
    _install_project(session, LATEST_DJANGO, "test", "mutation")
    session.run(
        "python",
        "mutation/run.py",
        "--sample",
        MUTATION_SAMPLE,
        *session.posargs,
        env={"DYNROUTE_SKIPPED": str(SKIPPED)},
    )


#: 30 mutants (the first 30 of a fixed order, so a subset of any larger sample): about
#: 5 minutes of a CI run that must stay under 30; ``nox -s mutation`` runs them all.
MUTATION_SAMPLE = "30"


@nox.session(python=LATEST_PYTHON)
def typing(session: nox.Session) -> None:
    """Type-check src/ and tests/typing/ with mypy and pyright, both strict.

    No database driver: nothing type-checked imports one, and mysqlclient would need
    libmariadb-dev to build.
    """
    _install_project(session, LATEST_DJANGO, "typing", extras=("debug-toolbar",))
    session.run("mypy")
    session.run("pyright")


@nox.session(python=LATEST_PYTHON)
def browser(session: nox.Session) -> None:
    """The routing panel (dynroute.contrib.debug_toolbar), also in headless Chromium.

    Needs Debian's chromium and chromium-driver (.ci/run installs them): without them
    the browser test is skipped off CI (``summary`` lists it), and fails on CI.
    """
    _install_project(session, LATEST_DJANGO, "browser", extras=("debug-toolbar",))
    session.run(
        "pytest",
        "tests/toolbar",
        "--ds=tests.toolbar.settings",
        *session.posargs,
        env={"DYNROUTE_TEST_DB": "sqlite", "DYNROUTE_SKIPPED": str(SKIPPED)},
    )


@nox.session(python=LATEST_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into build/docs; a broken link or reference fails."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "build/docs", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff; check the house's import contracts."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # import-linter reads the source without importing it: src/ on the path is enough.
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session(python=False)
def summary(session: nox.Session) -> None:
    """Say what this run skipped for a missing piece, and why (once per piece)."""
    noted = SKIPPED.read_text(encoding="utf-8").splitlines() if SKIPPED.exists() else []
    if not noted:
        session.log("Nothing was skipped for a missing server, driver library or browser.")
        return
    session.log("Skipped here, for a missing piece (with CI=true each is a failure):")
    for line in dict.fromkeys(noted):
        session.log(f"  - {line}")


@nox.session(python=LATEST_PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks quickly: they must work; their figures are not checked here."""
    session.run("python", "bench/run.py", "--quick")
    # The fleet: 10 databases over two PostgreSQL servers (it starts the second), with
    # the Django and psycopg of the venv run.py made, and dynroute from src/.
    session.run(
        str(Path("bench", ".venv-original", "bin", "python")),
        "bench/fleet.py",
        "--quick",
        env={"PYTHONPATH": str(Path("src").resolve())},
        external=True,
    )
