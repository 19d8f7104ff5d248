"""Shared fixtures: the server check, the leak guard, and data helpers."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from dynroute.core._stack import CURRENT
from tests import figures
from tests import settings as test_settings
from tests.helpers import ON_CI, note_skipped

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def _server_problem() -> str | None:
    """Say why the configured database server cannot be reached, or ``None``."""
    if test_settings.BACKEND == "sqlite":
        return None
    config = test_settings.DATABASES["default"]
    address = (config["HOST"], int(config["PORT"]))
    try:
        with socket.create_connection(address, timeout=2):
            return None
    except OSError as exc:
        return f"{test_settings.BACKEND} server at {address[0]}:{address[1]} unreachable: {exc}"


def pytest_report_header() -> str:
    """Show which backend this run tests."""
    return f"dynroute test databases: {test_settings.BACKEND}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability figures the suites collected, if any."""
    lines = figures.report()
    if lines:
        terminalreporter.section(f"dynroute reliability figures ({test_settings.BACKEND})")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the suite, visibly, when its server is down; on CI, fail instead."""
    problem = _server_problem()
    if problem is None:
        return
    if ON_CI:
        raise pytest.UsageError(f"CI=true and the test database is missing: {problem}")
    note_skipped(f"the {test_settings.BACKEND} suite: {problem}")
    marker = pytest.mark.skip(reason=f"{problem} (set CI=true to make this an error)")
    for item in items:
        item.add_marker(marker)


# The test databases' names as settings give them, before any run changed them.
_TEST_NAMES = {
    alias: config["TEST"]["NAME"]
    for alias, config in test_settings.DATABASES.items()
    if "NAME" in config["TEST"]  # not the mirrors
}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """With ``DYNROUTE_TEST_DB_PER_PROCESS`` set, give each process test databases of its own.

    ``nox -s mutation`` runs the suite in several processes at once, forked from one
    that has already run it: names chosen when the settings were imported would be
    shared.
    """
    if os.environ.get("DYNROUTE_TEST_DB_PER_PROCESS"):
        for alias, name in _TEST_NAMES.items():
            test_settings.DATABASES[alias]["TEST"]["NAME"] = f"{name}_p{os.getpid()}"


@pytest.fixture(autouse=True)
def _no_route_lock_before() -> Iterator[None]:
    """Each test starts in a process that never set a route lock (as most processes are).

    The first lock makes every block check on each entry, for the rest of the
    process: without this, the blocks' usual path would go untested after the lock
    tests.
    """
    from dynroute import _switches  # noqa: PLC0415 - needs Django set up

    used = _switches.locks_used
    yield
    _switches.locks_used = used


@pytest.fixture(autouse=True)
def _no_route_leaks() -> Iterator[None]:
    """Prove that no test leaves a route, write prevention or an alias behind it."""
    from dynroute import _switches, observe, replicas  # noqa: PLC0415 - needs Django set up
    from dynroute.replicas._pins import FORCED, PINS  # noqa: PLC0415
    from dynroute.tenants._locks import _LOCK  # noqa: PLC0415
    from dynroute.writes import get_scope  # noqa: PLC0415
    from dynroute.writes._transactions import _ENTRIES  # noqa: PLC0415

    aliases = set(connections.settings)
    assert CURRENT.get() is None, "a route was active before the test"
    assert get_scope() is None, "write prevention was active before the test"
    yield
    assert CURRENT.get() is None, "the test left a route active"
    assert get_scope() is None, "the test left write prevention active"
    assert _ENTRIES.get() is None, "the test left a dynroute.atomic() block active"
    assert PINS.get() is None, "the test left replica pinning active"
    assert _LOCK.get() is None, "the test left a route lock active"
    assert observe.get_timing() is None, "the test left a block's timing behind"
    assert not _switches.listening, "the test left a receiver connected to a dynroute signal"
    assert FORCED.get() == 0, "the test left use_primary() active"
    assert not replicas.down_replicas(), "the test left a replica marked down"
    assert set(connections.settings) == aliases, "the test left a database alias registered"
    # Tests that run the async ORM under asyncio.run leave connections open in
    # asgiref's executor thread, which stops PostgreSQL from dropping the test
    # databases at the end: close them there.
    asyncio.run(sync_to_async(connections.close_all)())


_fresh = itertools.count(1)


@pytest.fixture
def fresh_alias() -> Callable[[str], str]:
    """Give alias names no block has used in this process.

    A chosen alias stays bound to its settings for the life of the process, and a
    process may run the suite more than once (mutation testing does).
    """
    return lambda name: f"{name}_{next(_fresh)}"


@pytest.fixture(scope="session")
def runtime_database(django_db_setup, django_db_blocker, tmp_path_factory):
    """Settings of a real database outside settings.DATABASES, with the test tables."""
    from tests.runtime import created_database  # noqa: PLC0415 - needs Django set up

    with (
        django_db_blocker.unblock(),
        created_database(tmp_path_factory.mktemp("runtime")) as settings,
    ):
        yield settings


@pytest.fixture
def runtime(runtime_database, dynroute_runtime_databases):
    """The runtime database's settings, its tables emptied after the test."""
    from tests.runtime import clear  # noqa: PLC0415

    yield dict(runtime_database)
    clear(runtime_database)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for all the ASGI requests of a test, as a server has."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Replace the clock replica health reads; ``clock[0] += s`` moves it on."""
    from dynroute import replicas  # noqa: PLC0415 - needs Django set up
    from dynroute.replicas import _health  # noqa: PLC0415

    now = [1000.0]
    monkeypatch.setattr(_health.time, "monotonic", lambda: now[0])
    yield now
    replicas.mark_up()


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Make a replica's connection fail to open, until ``repair(alias)`` is called.

    Returns ``(break_, repair, attempts)``: ``attempts[alias]`` counts the connection
    attempts made to it since it was broken. The failure's message holds a password
    ("s3cret-password"), as some drivers' do.
    """
    from django.db import OperationalError  # noqa: PLC0415 - needs Django set up

    from dynroute import replicas  # noqa: PLC0415

    originals: dict[str, dict[str, Any]] = {}
    attempts: dict[str, int] = {}

    def break_(alias: str) -> None:
        wrapper = connections[alias]
        wrapper.close()
        originals[alias] = dict(wrapper.settings_dict)
        attempts[alias] = 0
        real = type(wrapper).get_new_connection

        def failing(self: Any, params: Any) -> Any:
            attempts[alias] += 1
            if alias in originals:
                msg = f"could not connect to {alias} (password=s3cret-password)"
                raise OperationalError(msg)
            return real(self, params)

        monkeypatch.setattr(wrapper, "get_new_connection", failing.__get__(wrapper))

    def repair(alias: str) -> None:
        originals.pop(alias)

    yield break_, repair, attempts
    replicas.mark_up()
