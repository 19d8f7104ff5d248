"""``manage.py dynroute``: migrating, checking and running over the directory's databases.

The databases are real ones on the backend under test, listed by ``tests/fleet.py``
(``DYNROUTE_DATABASES``); the migrations are ``tests/fleetapp``'s, whose ``0002`` can
be made to fail (or to take a while) on chosen databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from dynroute import (
    DatabaseConfiguration,
    aeach_database,
    current_route,
    each_database,
    signals,
)
from dynroute.exceptions import DatabaseConnectionError
from dynroute.fleet import _migrations
from tests import fleet
from tests.fleetapp.models import Account
from tests.runtime import BACKEND, full_settings, query

if TYPE_CHECKING:
    from collections.abc import Iterator

#: What fleetapp's migrations leave in django_migrations, besides contenttypes'.
ALL_FLEET = {"fleetapp.0001_initial", "fleetapp.0002_account_note"}
#: Databases of the migration suites (mutation testing, which runs the suite once per
#: mutant, makes it 10: the figures of the issue are the full suite's).
SIZE = int(os.environ.get("DYNROUTE_FLEET_SIZE", "100"))
#: The whole fleet, for fan-out.
FLEET = 2 * SIZE


@pytest.fixture(scope="module")
def fleet_names(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """``SIZE`` databases on the backend under test, created once and dropped at the end."""
    folder = tmp_path_factory.mktemp("fleet")
    names = [f"dynroute_fleet_{os.getpid()}_{number:03d}" for number in range(FLEET)]
    with django_db_blocker.unblock(), ThreadPoolExecutor(8) as threads:
        # In threads: dropping a PostgreSQL database waits for a checkpoint, which
        # several drops at once share.
        list(threads.map(_create, names))
        fleet.write({name: full_settings(name, folder) for name in names})
        yield names
        list(threads.map(_drop, names))
        fleet.write({})


def _create(name: str) -> None:
    _drop(name)
    if BACKEND == "postgresql":
        # FILE_COPY (PostgreSQL 15+): a copy of template1's files, and a drop that does not
        # wait for a checkpoint: half the time of the default for a fleet of them.
        query(None, f"CREATE DATABASE {name} STRATEGY FILE_COPY")
    elif BACKEND == "mariadb":
        query(None, f"CREATE DATABASE {name}")


def _drop(name: str) -> None:
    if BACKEND == "postgresql":
        query(None, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    elif BACKEND == "mariadb":
        query(None, f"DROP DATABASE IF EXISTS {name}")


class Fleet:
    """The fleet's first databases, emptied (no table), listed as the directory."""

    def __init__(self, names: list[str]) -> None:
        self._all = fleet.databases()
        self._names = names

    def use(self, count: int, *, fail: int = 0, slow: float = 0) -> dict[str, str]:
        """The first ``count`` databases, emptied: name -> database NAME.

        Args:
            count: How many the directory lists.
            fail: ``0002`` fails on every ``fail``-th of them (0: none).
            slow: Seconds ``0002`` takes.
        """
        names = self._names[:count]
        for name in names:
            _empty(self._all[name]["NAME"])
        self.list(names, fail=fail, slow=slow)
        return {name: self._all[name]["NAME"] for name in names}

    def list(self, names: list[str], *, fail: int = 0, slow: float = 0) -> None:
        """List ``names`` as the directory (``fail`` and ``slow`` as :meth:`use`)."""
        failing = [self._all[name]["NAME"] for name in names[fail - 1 :: fail]] if fail else []
        fleet.write({name: self._all[name] for name in names}, fail=failing, slow=slow)

    def entry(self, name: str) -> dict[str, Any]:
        """``name``'s settings."""
        return dict(self._all[name])


@pytest.fixture
def databases(fleet_names: list[str], django_db_blocker: Any) -> Iterator[Fleet]:
    """The fleet, to :meth:`Fleet.use`; the whole directory listed again after the test."""
    with django_db_blocker.unblock():
        entries = fleet.databases()
        yield Fleet(fleet_names)
        fleet.write(entries)


def _empty(database: str) -> None:
    if BACKEND == "sqlite":
        Path(database).unlink(missing_ok=True)
        return
    for table in ("fleetapp_account", "django_content_type", "django_migrations"):
        query(database, f"DROP TABLE IF EXISTS {table}")


def applied(database: str) -> set[str]:
    """The migrations a database has applied, read with the driver."""
    try:
        rows = query(database, "SELECT app, name FROM django_migrations")
    except Exception:
        return set()
    return {f"{app}.{name}" for app, name in rows}


def has_note_column(database: str) -> bool:
    """Whether ``0002``'s column exists (its migration applied, not half-applied)."""
    try:
        query(database, "SELECT note FROM fleetapp_account")
    except Exception:
        return False
    return True


def dynroute(*args: str, **options: Any) -> tuple[int, str, str]:
    """``manage.py dynroute ARGS``: its exit status, stdout and stderr."""
    from io import StringIO  # noqa: PLC0415

    out, err = StringIO(), StringIO()
    try:
        call_command("dynroute", *args, stdout=out, stderr=err, **options)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_migrate_brings_every_database_up_and_a_second_run_finds_them_up_to_date(
    databases: Fleet, tmp_path: Path
) -> None:
    """Every database gets every migration; the next run applies nothing."""
    chosen = databases.use(20)
    state = str(tmp_path / "state.json")
    status, out, _ = dynroute("migrate", "--parallel", "2", "--state", state)
    assert status == 0, out
    assert "20 databases" in out
    assert "20 migrated" in out
    for database in chosen.values():
        assert applied(database) >= ALL_FLEET
        assert has_note_column(database)
    status, out, _ = dynroute("migrate", "--state", state)
    assert status == 0
    assert "20 up to date" in out
    assert not Path(state).exists()


def test_a_failing_migration_stops_only_its_databases_and_resume_takes_exactly_those(
    databases: Fleet, tmp_path: Path
) -> None:
    """3 of 100 fail: 97 migrated, the 3 named, status 1; ``--resume`` migrates the 3."""
    every = SIZE // 3
    chosen = databases.use(SIZE, fail=every)
    names = list(chosen)
    failing = names[every - 1 :: every][:3]
    state = str(tmp_path / "state.json")
    status, out, err = dynroute("migrate", "--parallel", "3", "--state", state)
    assert status == 1
    assert f"{SIZE - 3} migrated" in out
    assert "3 failed" in out
    for name in failing:
        assert f"failed: {name}: RuntimeError: this migration is made to fail" in err
        assert "fleetapp.0002_account_note" not in applied(chosen[name])
        # Rolled back with the migration's transaction; MariaDB commits each DDL
        # statement (Django's documented limit): its column stays, for the operator.
        assert has_note_column(chosen[name]) == (BACKEND == "mariadb")
    assert json.loads(Path(state).read_text())["left"] == failing
    for name in set(names) - set(failing):
        assert applied(chosen[name]) >= ALL_FLEET

    databases.list(names)  # the migration fixed
    if BACKEND == "mariadb":  # and the half-applied one undone by hand
        for name in failing:
            query(chosen[name], "ALTER TABLE fleetapp_account DROP COLUMN note")
    seen: list[str] = []

    def started(name: str, **kwargs: object) -> None:
        seen.append(name)

    signals.database_started.connect(started)
    try:
        status, out, _ = dynroute("migrate", "--resume", "--state", state)
    finally:
        signals.database_started.disconnect(started)
    assert status == 0, out
    assert "3 migrated" in out
    assert sorted(seen) == sorted(failing)
    for name in failing:
        assert applied(chosen[name]) >= ALL_FLEET


def test_a_database_that_is_down_is_reported_and_the_others_migrated(
    databases: Fleet, tmp_path: Path
) -> None:
    """A database whose server does not answer fails alone, its error without secrets."""
    names = list(databases.use(10))
    down = databases.entry(names[3])
    if BACKEND == "sqlite":
        down["NAME"] = str(tmp_path / "missing-folder" / "db.sqlite3")
    else:
        down.update(PORT="1", PASSWORD="s3cret-pw")
    fleet.write({**{name: databases.entry(name) for name in names}, names[3]: down})
    status, out, err = dynroute("migrate", "--state", str(tmp_path / "state.json"))
    assert status == 1
    assert "9 migrated" in out
    assert f"failed: {names[3]}:" in err
    assert "s3cret-pw" not in out + err


def test_showmigrations_check_gates_a_deploy_while_a_database_is_behind(
    databases: Fleet, tmp_path: Path
) -> None:
    """``--check`` exits 1 naming the database behind and its migration; 0 once migrated."""
    chosen = databases.use(10)
    state = str(tmp_path / "state.json")
    assert dynroute("migrate", "--state", state)[0] == 0
    lagging = list(chosen)[7]
    database = chosen[lagging]
    query(database, "DELETE FROM django_migrations WHERE name = '0002_account_note'")
    query(database, "ALTER TABLE fleetapp_account DROP COLUMN note")
    status, out, _ = dynroute("showmigrations", "--check")
    assert status == 1
    assert f"{lagging}: fleetapp.0002_account_note" in out
    assert "9 up to date" in out
    assert dynroute("showmigrations")[0] == 0  # without --check: a report
    assert dynroute("migrate", "--only", lagging, "--state", state)[0] == 0
    assert dynroute("showmigrations", "--check")[0] == 0


def test_two_runs_at_once_migrate_each_database_once(databases: Fleet, tmp_path: Path) -> None:
    """Started together, the runs share the work: each database migrated by one of them."""
    chosen = databases.use(8, slow=0.3)
    results: list[tuple[int, str, str]] = []

    def run(number: int) -> None:
        results.append(dynroute("-v", "2", "migrate", "--state", str(tmp_path / f"{number}.json")))

    threads = [threading.Thread(target=run, args=(number,)) for number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _, _ in results] == [0, 0], results
    for name, database in chosen.items():
        told = [out for _, out, _ in results if f"{name}: migrated" in out]
        assert len(told) == 1, (name, results)
        assert applied(database) >= ALL_FLEET


def test_ctrl_c_leaves_no_database_half_migrated_and_resume_finishes(
    databases: Fleet, tmp_path: Path
) -> None:
    """SIGINT mid-run: running databases finish, the rest are left whole, ``--resume`` ends it."""
    chosen = databases.use(12, slow=0.4)
    state = tmp_path / "state.json"
    script = (
        "import django, sys; django.setup();"
        "from django.core.management import call_command;"
        "call_command('dynroute', '-v', '2', 'migrate', '--parallel', '2', "
        f"'--state', {str(state)!r})"
    )
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).parent.parent,
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # the first database finished
    assert ": migrated" in first, first
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 1, (out, err)
    assert "Stopping" in err
    left = json.loads(state.read_text())["left"]
    assert left
    for name, database in chosen.items():
        done = applied(database)
        if name in left:
            assert "fleetapp.0002_account_note" not in done
            assert not has_note_column(database)
        else:
            assert done >= ALL_FLEET
    databases.list(list(chosen))
    status, out, _ = dynroute("migrate", "--resume", "--state", str(state))
    assert status == 0, out
    assert f"{len(left)} migrated" in out
    for database in chosen.values():
        assert applied(database) >= ALL_FLEET


def test_unknown_names_are_refused_before_anything_runs(databases: Fleet) -> None:
    """``--only`` with a name not in the directory: an error naming it, nothing migrated."""
    chosen = databases.use(3)
    with pytest.raises(CommandError, match="'nope'"):
        call_command("dynroute", "migrate", "--only", "nope")
    assert all(not applied(database) for database in chosen.values())


def test_run_runs_a_command_on_each_database(databases: Fleet, tmp_path: Path) -> None:
    """``dynroute run`` runs a management command inside a block on each database."""
    chosen = databases.use(4)
    assert dynroute("migrate", "--state", str(tmp_path / "s.json"))[0] == 0
    status, out, _ = dynroute("-v", "2", "run", "showmigrations", "fleetapp")
    assert status == 0, out
    for name in chosen:
        assert f"{name} | fleetapp" in out
        assert f"{name} |  [X] 0002_account_note" in out


def _sessions(prefix: str, folder: Path | None, alias: str | None = None) -> set[int]:
    """The sessions open on the fleet's databases: server session ids (SQLite: open files).

    Asked through ``alias``'s connection when given (a block's own, open while it
    asks), else through a connection of the driver's.
    """
    if BACKEND == "sqlite":
        assert folder is not None
        if alias is not None:
            connections[alias].ensure_connection()
        return {int(fd.name) for fd in Path("/proc/self/fd").iterdir() if _in(fd, folder)}
    if BACKEND == "postgresql":
        sql = "SELECT pid FROM pg_stat_activity WHERE datname LIKE %s"
    else:
        sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB LIKE %s"
    if alias is None:
        return {int(row[0]) for row in query(None, sql, [f"{prefix}%"])}
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [f"{prefix}%"])
        return {int(row[0]) for row in cursor.fetchall()}


def _in(fd: Path, folder: Path) -> bool:
    try:
        target = fd.readlink()
    except OSError:
        return False
    return target.parent == folder and target.suffix == ".sqlite3"


def _own_session(alias: str) -> int | None:
    """The server's id of ``alias``'s connection in this thread (SQLite: none)."""
    if BACKEND == "sqlite":
        return None
    function = "pg_backend_pid()" if BACKEND == "postgresql" else "CONNECTION_ID()"
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT {function}")
        (session,) = cursor.fetchone()
    return int(session)


def test_fan_out_over_200_databases_holds_at_most_its_concurrency_of_connections(
    databases: Fleet,
) -> None:
    """``each_database`` with concurrency 8: 200 results, a down one as its error, <= 8 open.

    Each call counts, on the server, the sessions open on the fleet's databases. A
    server lists a session for a moment after its client closed it: the sessions of
    calls that had already returned (whose connection the fan-out closes next) are
    left out; one left open for good shows in the count after the run.
    """
    chosen = databases.use(FLEET)
    names = list(chosen)
    prefix = names[0].rsplit("_", 1)[0] + "_"
    folder = Path(chosen[names[0]]).parent if BACKEND == "sqlite" else None
    down = databases.entry(names[10])
    if BACKEND == "sqlite":
        down["NAME"] = "/nonexistent-folder/db.sqlite3"
    else:
        down.update(PORT="1", PASSWORD="s3cret-pw")
    fleet.write({**{name: databases.entry(name) for name in names}, names[10]: down})
    seen: list[int] = []
    returned: set[int] = set()
    lock = threading.Lock()

    def work(name: str) -> str:
        route = current_route()
        assert route is not None
        assert route.alias is not None
        own = _own_session(route.alias)
        listed = _sessions(prefix, folder, route.alias)
        with lock:
            seen.append(len(listed - returned))
        time.sleep(0.01)
        with lock:
            if own is not None:
                returned.add(own)
        return name.upper()

    with told_signals() as told:
        results = each_database(work, concurrency=8)
    assert sorted(told) == sorted(
        [("started", name, "each") for name in names]
        + [("done", name, "each") for name in names if name != names[10]]
        + [("failed", names[10], "each")]
    )
    assert list(results) == names
    assert [results[name].value for name in names if name != names[10]] == [
        name.upper() for name in names if name != names[10]
    ]
    failed = results[names[10]]
    assert not failed.ok
    assert isinstance(failed.error, DatabaseConnectionError)
    assert "s3cret-pw" not in str(failed.error)
    with pytest.raises(DatabaseConnectionError):
        failed.unwrap()
    assert max(seen) <= 8
    assert max(seen) >= 4  # the work did overlap
    assert _settled(prefix, folder)


@contextlib.contextmanager
def told_signals() -> Iterator[list[tuple[str, str, str]]]:
    """What database_started and database_finished say: (status or "started", name, operation)."""
    told: list[tuple[str, str, str]] = []

    def started(name: str, operation: str, **kwargs: object) -> None:
        told.append(("started", name, operation))

    def finished(name: str, operation: str, status: str, **kwargs: object) -> None:
        told.append((status, name, operation))

    signals.database_started.connect(started)
    signals.database_finished.connect(finished)
    try:
        yield told
    finally:
        signals.database_started.disconnect(started)
        signals.database_finished.disconnect(finished)


def _settled(prefix: str, folder: Path | None) -> bool:
    """Whether no session is open on the fleet within 3 s (servers lag a moment)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if not _sessions(prefix, folder):
            return True
        time.sleep(0.05)
    return False


def test_the_async_fan_out_gives_each_database_its_result(databases: Fleet) -> None:
    """``aeach_database`` awaits ``fn`` in a block on each database, errors as results."""
    chosen = databases.use(6)
    assert dynroute("migrate")[0] == 0

    async def work(name: str) -> int:
        await Account.objects.acreate(name=name)
        return await Account.objects.acount()

    results = asyncio.run(aeach_database(work, concurrency=3))
    assert {name: result.value for name, result in results.items()} == dict.fromkeys(chosen, 1)
    for name, database in chosen.items():
        assert query(database, "SELECT name FROM fleetapp_account") == [(name,)]


def test_create_makes_the_database_the_directory_names_then_migrates_it(
    databases: Fleet, tmp_path: Path
) -> None:
    """``dynroute create NAME``: the database on its server, migrated; again: refused, named."""
    chosen = databases.use(2)
    name = f"dynroute_fleet_{os.getpid()}_new"
    entry = full_settings(name, tmp_path)
    fleet.write({**{n: databases.entry(n) for n in chosen}, "newco": entry})
    _drop(name)
    try:
        status, out, _ = dynroute("create", "newco")
        assert status == 0, out
        if BACKEND == "sqlite":
            assert "SQLite creates the file" in out
        else:
            assert f"newco: created database '{name}'.\n" in out  # no template named
        assert "newco: migrated" in out
        assert applied(entry["NAME"]) >= ALL_FLEET
        if BACKEND != "sqlite":
            with pytest.raises(CommandError, match="newco: CREATE DATABASE failed"):
                call_command("dynroute", "create", "newco")
    finally:
        _drop(name)


@pytest.mark.skipif(BACKEND != "postgresql", reason="TEMPLATE is PostgreSQL's")
def test_create_copies_a_template_on_postgresql(databases: Fleet, tmp_path: Path) -> None:
    """``--template``: the copy has the template's migrations; nothing is left to apply."""
    chosen = databases.use(1)
    (template,) = chosen.values()
    assert dynroute("migrate", "--state", str(tmp_path / "s.json"))[0] == 0
    name = f"dynroute_fleet_{os.getpid()}_copy"
    fleet.write({"copy": full_settings(name, tmp_path)})
    _drop(name)
    # PostgreSQL copies a template only once no session is on it: the workers that
    # migrated it have exited, and the server may list their sessions a moment more.
    assert _settled(template, None)
    try:
        status, out, _ = dynroute("create", "copy", "--template", template)
        assert status == 0, out
        assert f"created database '{name}' from {template}" in out
        assert "copy: up to date" in out
    finally:
        _drop(name)


class Terminal(io.StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar(databases: Fleet, tmp_path: Path) -> None:
    """On a terminal (and with rich installed), a bar counts the databases done."""
    databases.use(3)
    out = Terminal()
    call_command("dynroute", "migrate", "--state", str(tmp_path / "s.json"), stdout=out)
    shown = out.getvalue()
    assert "3/3" in shown
    assert "3 databases in" in shown
    plain = io.StringIO()
    call_command("dynroute", "migrate", "--state", str(tmp_path / "s.json"), stdout=plain)
    assert "/3" not in plain.getvalue()  # not a terminal: lines only


def test_the_check_reads_applied_migrations_on_a_connection_of_its_own(
    databases: Fleet, tmp_path: Path
) -> None:
    """read_applied(): the set Django's recorder gives, through the driver alone."""
    chosen = databases.use(1)
    assert dynroute("migrate", "--state", str(tmp_path / "s.json"))[0] == 0
    (name,) = chosen
    entry = fleet.databases()[name]
    complete = DatabaseConfiguration(entry).settings
    found = _migrations.read_applied(complete, "fleet_check")
    assert found is not None
    assert {f"{app}.{migration}" for app, migration in found} == applied(chosen[name])
