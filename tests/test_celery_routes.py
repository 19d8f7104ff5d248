"""The route travels into Celery tasks: a task enqueued in a tenant's request runs there.

``dynroute.contrib.celery`` writes the enqueuing code's route in the task's headers as
names (a directory name, a settings alias), never settings, and the worker runs the
task inside blocks on those databases. Checked in eager mode, on Celery's in-memory
broker, and with a real worker process on a real Redis server that the tests start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from celery import chain, group, signals
from django.test import Client, modify_settings, override_settings

from dynroute import current_route, database_named, in_database
from dynroute.contrib.celery import HEADER, _pins
from tests import celery_routes, fleet
from tests.helpers import unavailable
from tests.runtime import BACKEND, created_database, query

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "s3cret-pw"


@pytest.fixture
def tenants(
    django_db_blocker: Any, dynroute_runtime_databases: None, tmp_path: Path
) -> Iterator[dict[str, dict[str, Any]]]:
    """Two tenants' databases, listed in the directory as "acme" and "globex"."""
    with (
        django_db_blocker.unblock(),
        created_database(tmp_path) as acme,
        created_database(tmp_path) as globex,
    ):
        given = {"acme": acme, "globex": globex}
        if BACKEND != "mariadb":  # the server ignores it (trust auth, SQLite): it must not leak
            given = {name: {**entry, "PASSWORD": SECRET} for name, entry in given.items()}
        saved = fleet.databases()
        fleet.write(given)
        try:
            yield given
        finally:
            fleet.write(saved)


@pytest.fixture
def installed() -> Iterator[None]:
    """The integration switched on as users do it: its app in ``INSTALLED_APPS``."""
    with modify_settings(INSTALLED_APPS={"append": "dynroute.contrib.celery"}):
        yield
    _pins.disconnect()


@pytest.fixture
def headers() -> Iterator[list[dict[str, Any]]]:
    """The headers of every task published during the test."""
    seen: list[dict[str, Any]] = []

    def keep(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        seen.append(dict(headers or {}))

    # Connected after the integration's receiver: it sees the headers complete.
    signals.before_task_publish.connect(keep, weak=False)
    yield seen
    signals.before_task_publish.disconnect(keep)


def names_in(database: str) -> list[str]:
    """The Items of a tenant's database, read with the driver."""
    return sorted(row[0] for row in query(database, "SELECT name FROM testapp_item"))


def served() -> override_settings:
    """Requests routed by tenant name, through DatabaseMiddleware."""
    return override_settings(
        ROOT_URLCONF="tests.celery_routes",
        MIDDLEWARE=["dynroute.middleware.DatabaseMiddleware"],
        DYNROUTE_REQUEST_ROUTE="tests.celery_routes.tenant",
    )


def test_an_eager_task_enqueued_in_a_tenants_request_runs_on_its_database(
    tenants: dict[str, dict[str, Any]], installed: None
) -> None:
    """``task_always_eager``: the task runs in the request's block, on the tenant's database."""
    celery_routes.app.conf.task_always_eager = True
    try:
        with served():
            response = Client().get("/enqueue", {"tenant": "globex", "label": "eager"})
    finally:
        celery_routes.app.conf.task_always_eager = False
    assert response.status_code == 200
    assert names_in(tenants["globex"]["NAME"]) == ["eager"]
    assert names_in(tenants["acme"]["NAME"]) == []


def test_the_header_names_the_tenant_and_holds_no_settings(
    tenants: dict[str, dict[str, Any]], installed: None, headers: list[dict[str, Any]]
) -> None:
    """The route travels as the directory's name; no password, host or path is published."""
    with in_database(tenants["acme"], write=True):
        celery_routes.app.tasks["record"].apply_async(("x",), connection=_nowhere())
    [published] = headers
    assert published[HEADER]["route"] == {"read": {"name": "acme"}, "write": {"name": "acme"}}
    text = json.dumps(published, default=str)
    assert SECRET not in text
    assert str(tenants["acme"]["NAME"]) not in text


def test_a_settings_alias_travels_as_itself(installed: None, headers: list[dict[str, Any]]) -> None:
    """A block on an alias of DATABASES carries the alias; reads and writes apart."""
    with in_database("other", write=True), in_database("replica1"):
        celery_routes.app.tasks["record"].apply_async(("x",), connection=_nowhere())
    assert headers[0][HEADER]["route"] == {
        "read": {"alias": "replica1"},
        "write": {"alias": "other"},
    }


@pytest.mark.usefixtures("installed")
def test_a_route_the_directory_does_not_name_is_refused_loudly(
    tmp_path: Path,
    headers: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    django_db_blocker: Any,
    dynroute_runtime_databases: None,
) -> None:
    """A bare settings dict: an ERROR where it is enqueued; the task fails on its first query."""
    with django_db_blocker.unblock(), created_database(tmp_path) as stray:
        with in_database(stray, write=True), caplog.at_level(logging.ERROR, "dynroute"):
            celery_routes.app.tasks["record"].apply_async(("x",), connection=_nowhere())
        assert "DYNROUTE_DATABASES does not name" in caplog.text
        route = headers[0][HEADER]["route"]
        assert "DYNROUTE_DATABASES does not name" in route["refused"]
        assert str(stray["NAME"]) not in json.dumps(headers[0], default=str)
        # In a worker: the task is run with that header, and fails before any query.
        with pytest.raises(Exception, match="DYNROUTE_DATABASES does not name"):
            celery_routes.app.tasks["record"].apply(("x",), headers=headers[0], throw=True)
        assert names_in(str(stray["NAME"])) == []


def _nowhere() -> Any:
    """A broker connection that publishes into a queue nobody reads (in memory)."""
    return celery_routes.app.connection_for_write("memory://")


# A real worker process, on a real Redis server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis server of the tests' own, on a free port."""
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis-server (apt-get install redis-server) for the Celery worker test")
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - Debian's redis-server
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:  # noqa: PERF203 - a wait, not a loop over data
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


@contextlib.contextmanager
def worker_process(url: str, queue: str) -> Iterator[subprocess.Popen[str]]:
    """``celery worker`` on ``tests.celery_routes``, in a process of its own."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DYNROUTE_TEST_CELERY": "1",
        "DYNROUTE_TEST_REDIS_URL": url,
        "DYNROUTE_TEST_CELERY_QUEUE": queue,
        # Django 6.1's MySQL checks connect to every alias: the worker runs none of
        # them (Celery's own switch), and has no standby or GTID pair aliases.
        "CELERY_SKIP_CHECKS": "1",
        "DYNROUTE_TEST_STANDBY": "0",
    }
    process = subprocess.Popen(  # noqa: S603 - our own interpreter
        [
            sys.executable,
            *("-m", "celery", "-A", "tests.celery_routes", "worker"),
            *("--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("-Q", queue, "--loglevel", "WARNING"),
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def test_a_worker_process_runs_the_task_on_the_tenants_database(
    tenants: dict[str, dict[str, Any]],
    installed: None,
    headers: list[dict[str, Any]],
    redis_url: str,
) -> None:
    """Enqueued in acme's and globex's requests, on Redis: each runs on its tenant's database."""
    queue = f"dynroute-routes-{os.getpid()}"
    saved = celery_routes.app
    celery_routes.app = redis_app = celery_routes.make_app(redis_url, redis_url, queue)
    try:
        with worker_process(redis_url, queue) as process, served():
            ids = {
                name: Client()
                .get("/enqueue", {"tenant": name, "label": f"for-{name}"})
                .json()["id"]
                for name in ("acme", "globex")
            }
            results = {
                name: redis_app.AsyncResult(task_id).get(timeout=20)
                for name, task_id in ids.items()
            }
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
    finally:
        celery_routes.app = saved
        redis_app.close()
    assert results == {"acme": ["for-acme"], "globex": ["for-globex"]}
    assert names_in(tenants["acme"]["NAME"]) == ["for-acme"]
    assert names_in(tenants["globex"]["NAME"]) == ["for-globex"]
    assert [h[HEADER]["route"]["write"] for h in headers] == [{"name": "acme"}, {"name": "globex"}]
    assert SECRET not in json.dumps(headers, default=str)


@pytest.mark.usefixtures("installed")
def test_chains_and_groups_carry_the_route_to_each_task(
    tenants: dict[str, dict[str, Any]], redis_url: str
) -> None:
    """A chain's next task (published by the worker) and each task of a group run on acme."""
    queue = f"dynroute-routes-chain-{os.getpid()}"
    saved = celery_routes.app
    celery_routes.app = redis_app = celery_routes.make_app(redis_url, redis_url, queue)
    record = redis_app.tasks["record"]
    try:
        with worker_process(redis_url, queue):
            with in_database(database_named("acme"), write=True):
                chained = chain(record.si("chain-1"), record.si("chain-2")).apply_async()
                grouped = group(record.si("group-1"), record.si("group-2")).apply_async()
            # Each task lists what it found on its database: acme's rows.
            assert {"chain-1", "chain-2"} <= set(chained.get(timeout=20))
            first, second = grouped.get(timeout=20)
            assert "group-1" in first
            assert "group-2" in second
    finally:
        celery_routes.app = saved
        redis_app.close()
    assert names_in(tenants["acme"]["NAME"]) == ["chain-1", "chain-2", "group-1", "group-2"]
    assert names_in(tenants["globex"]["NAME"]) == []


@pytest.mark.usefixtures("installed")
def test_a_route_that_cannot_be_entered_fails_the_task_and_leaves_nothing_entered(
    tenants: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Writes to acme entered, reads' database down: the task fails, no block stays."""
    fleet.write({**tenants, "down": {**tenants["acme"], "NAME": str(tmp_path / "no" / "db")}})
    if BACKEND != "sqlite":
        fleet.write({**tenants, "down": {**tenants["acme"], "PORT": "1"}})
    header = {HEADER: {"v": 1, "route": {"read": {"name": "down"}, "write": {"name": "acme"}}}}
    with pytest.raises(Exception, match="cannot enter its route"):
        celery_routes.app.tasks["record"].apply(("x",), headers=header, throw=True)
    assert current_route() is None
    assert names_in(tenants["acme"]["NAME"]) == []
