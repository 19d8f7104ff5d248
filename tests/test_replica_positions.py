"""Read-your-writes by position and lag limits, on real replication: PostgreSQL and MariaDB.

PostgreSQL: a streaming standby of the test server (tests/standby.py); MariaDB: a
primary and its GTID replica of their own (tests/mariadb_pair.py), the server on 3306
left alone. Pausing replay (``pg_wal_replay_pause()``, ``STOP SLAVE SQL_THREAD``)
makes a real, deterministic lag. Requests go through a real WSGI server in threads,
with a client that keeps cookies (and drops them when their Max-Age is over).

Each scenario runs with ``pin="position"`` and with ``pin="time"``: the time pin shows
the stale reads (or the primary load) that the position pin removes, so each test
can fail. With ``CI=true`` a server that cannot start fails the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import modify_settings, override_settings

from dynroute import PrimaryReplica, in_database
from dynroute.replicas import forget_positions, lagging
from dynroute.signals import replica_caught_up, replica_lagging
from tests import settings as test_settings
from tests import standby as standby_server
from tests.helpers import unavailable
from tests.test_replica_standby import Site, urlpatterns
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.skipif(
        test_settings.BACKEND == "sqlite",
        reason="replication runs with DYNROUTE_TEST_DB=postgresql or mariadb",
    ),
    pytest.mark.django_db(
        databases=(
            ["default", "standby"]
            if test_settings.BACKEND == "postgresql"
            else ["default", "gtid_primary", "gtid_replica"]
        ),
        transaction=True,
    ),
    pytest.mark.timeout(300),
]

__all__ = ["urlpatterns"]  # the site's: this module is its ROOT_URLCONF


@dataclass
class Replication:
    """A primary and a replica fed by real replication, with replay to pause."""

    primary: str
    replica: str
    pause: Callable[[], None]
    resume: Callable[[], None]
    wait: Callable[[], None]

    def policy(self, **options: Any) -> PrimaryReplica:
        """A policy on this pair."""
        return PrimaryReplica(self.primary, (self.replica,), **options)


@pytest.fixture(scope="module")
def replication(django_db_setup: None, django_db_blocker: Any) -> Iterator[Replication]:
    """The backend's replication, running for this module."""
    with django_db_blocker.unblock():
        if test_settings.BACKEND == "postgresql":
            yield from _standby()
        else:
            yield from _gtid_pair()


def _standby() -> Iterator[Replication]:
    with connections["default"].cursor() as cursor:
        try:
            server = standby_server.start(connections["default"].settings_dict, cursor)
        except standby_server.StandbyError as error:
            unavailable(f"the PostgreSQL standby could not start: {error}")
    connections.settings["standby"]["PORT"] = str(server.port)

    def replay(call: str) -> Callable[[], None]:
        def run() -> None:
            with connections["standby"].cursor() as cursor:
                cursor.execute(f"SELECT {call}()")

        return run

    def wait() -> None:
        with connections["default"].cursor() as primary, connections["standby"].cursor() as replica:
            standby_server.wait_for_replay(primary, replica)

    try:
        yield Replication(
            "default",
            "standby",
            replay("pg_wal_replay_pause"),
            replay("pg_wal_replay_resume"),
            wait,
        )
    finally:
        connections["standby"].close()
        with connections["default"].cursor() as cursor:
            server.remove(cursor)


def _gtid_pair() -> Iterator[Replication]:
    from tests import mariadb_pair  # noqa: PLC0415 - needs MySQLdb, MariaDB runs only

    try:
        pair = mariadb_pair.start()
    except mariadb_pair.PairError as error:
        unavailable(f"the MariaDB primary/replica pair could not start: {error}")
    try:
        name = connections["default"].settings_dict["NAME"]
        pair.query("primary", f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        for alias, port in (
            ("gtid_primary", pair.primary_port),
            ("gtid_replica", pair.replica_port),
        ):
            connections.settings[alias]["PORT"] = str(port)
            connections[alias].close()
        call_command("migrate", database="gtid_primary", run_syncdb=True, verbosity=0)
        pair.wait_caught_up()
        yield Replication(
            "gtid_primary", "gtid_replica", pair.pause, pair.resume, pair.wait_caught_up
        )
    finally:
        for alias in ("gtid_primary", "gtid_replica"):
            connections[alias].close()
        pair.remove()


@pytest.fixture(autouse=True)
def fresh(replication: Replication) -> Iterator[None]:
    """Replay running and caught up; nothing cached of positions or lag; rows gone after."""
    replication.resume()
    replication.wait()
    forget_positions()
    yield
    replication.resume()
    forget_positions()
    Item.objects.using(replication.primary).all().delete()
    replication.wait()


@pytest.fixture
def site_for(replication: Replication) -> Iterator[Callable[..., Site]]:
    """Serve the site with PrimaryReplicaMiddleware on the pair, configured per test."""
    sites: list[tuple[Site, Any]] = []

    def serve(**config: Any) -> Site:
        settings = override_settings(
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["dynroute.middleware.PrimaryReplicaMiddleware"],
            DYNROUTE_PRIMARY_REPLICA={
                "primary": replication.primary,
                "replicas": [replication.replica],
                **config,
            },
            ALLOWED_HOSTS=["127.0.0.1"],
        )
        settings.enable()
        site = Site()
        sites.append((site, settings))
        return site

    yield serve
    for site, settings in reversed(sites):
        site.close()
        settings.disable()


@pytest.mark.parametrize("pin", ["position", "time"])
def test_replay_paused_past_pin_seconds_a_writer_reads_no_stale_row_by_position(
    replication: Replication, site_for: Callable[..., Site], pin: str
) -> None:
    """Paused longer than pin_seconds: a time pin expires and the writer reads stale rows.

    The position pin keeps the writer on the primary until the replica has replayed
    the write, however long that takes; other clients keep reading the replica.
    """
    site = site_for(pin=pin, pin_seconds=1)
    writer = site.client()
    replication.pause()
    assert writer("/create/", {"name": "posted"})["db"] == replication.primary
    stale, reads = 0, 0
    deadline = time.monotonic() + 2.5  # 2.5 times pin_seconds
    while time.monotonic() < deadline:
        answer = writer("/names/")
        reads += 1
        stale += "posted" not in answer["names"]
        time.sleep(0.1)
    assert site.client()("/names/") == {"db": replication.replica, "names": []}
    if pin == "position":
        assert stale == 0, f"{stale} stale reads of {reads}"
    else:
        assert stale > 0, "the time pin outlived pin_seconds: the test cannot show the difference"
    # Resumed, the writer's reads go back to the replica, which now has the row.
    replication.resume()
    replication.wait()
    assert writer("/names/") == {"db": replication.replica, "names": ["posted"]}


@pytest.mark.parametrize("pin", ["position", "time"])
def test_replay_running_the_reads_after_a_write_go_to_the_replica_by_position(
    replication: Replication, site_for: Callable[..., Site], pin: str
) -> None:
    """Replication keeps up: a position pin sends the writer's next reads to the replica.

    A time pin sends them all to the primary for pin_seconds; the primary's load from
    recent writers falls with positions. Every read sees the writer's rows either way.
    """
    site = site_for(pin=pin, pin_seconds=5)
    writer = site.client()
    where = []
    for round_ in range(10):
        writer("/create/", {"name": f"row{round_}"})
        for _ in range(3):
            time.sleep(0.05)
            answer = writer("/names/")
            assert f"row{round_}" in answer["names"]
            where.append(answer["db"])
    on_replica = where.count(replication.replica) / len(where)
    if pin == "position":
        assert on_replica >= 0.95, where
    else:
        assert on_replica == 0, where


def test_a_replica_paused_past_max_lag_is_skipped_then_used_again_once_caught_up(
    replication: Replication,
) -> None:
    """max_lag: a late replica stops being chosen within lag_check_seconds, and comes back."""
    policy = replication.policy(max_lag=0.5, lag_check_seconds=0.3)
    sent: list[tuple[str, str]] = []

    def record(signal: str) -> Callable[..., None]:
        def receiver(sender: Any, alias: str, lag: float, **kwargs: Any) -> None:
            sent.append((signal, alias))

        return receiver

    lagging_receiver, caught_up_receiver = record("lagging"), record("caught up")
    replica_lagging.connect(lagging_receiver)
    replica_caught_up.connect(caught_up_receiver)
    try:
        assert _reads(policy) == replication.replica
        replication.pause()
        Item.objects.using(replication.primary).create(name="waiting")  # a transaction to replay
        time.sleep(0.5)  # past max_lag
        assert _first_read_on(replication.primary, policy) <= 0.3 + 0.2
        assert replication.replica in lagging()
        assert sent == [("lagging", replication.replica)]
        replication.resume()
        replication.wait()
        assert _first_read_on(replication.replica, policy) <= 0.3 + 0.2
        assert sent[-1] == ("caught up", replication.replica)
        assert not lagging()
    finally:
        replica_lagging.disconnect(lagging_receiver)
        replica_caught_up.disconnect(caught_up_receiver)


def test_an_idle_primary_does_not_make_its_replica_look_late(replication: Replication) -> None:
    """No write for twice max_lag: the replica has replayed all it received, so it is used."""
    policy = replication.policy(max_lag=0.5, lag_check_seconds=0.1)
    Item.objects.using(replication.primary).create(name="then nothing")
    replication.wait()
    time.sleep(1.0)  # 2x max_lag without a write
    for _ in range(5):
        assert _reads(policy) == replication.replica
        time.sleep(0.1)  # each past lag_check_seconds: the lag is asked again
    assert not lagging()


def _reads(policy: PrimaryReplica) -> str:
    """Where a block on ``policy`` reads (the first read settles the entry)."""
    with in_database(policy=policy):
        list(Item.objects.all()[:1])
        return Item.objects.all().db


def _first_read_on(alias: str, policy: PrimaryReplica, within: float = 5.0) -> float:
    """Enter blocks until one reads ``alias``; return the seconds it took."""
    start = time.monotonic()
    while _reads(policy) != alias:
        assert time.monotonic() - start < within, f"reads never went to {alias}"
        time.sleep(0.02)
    return time.monotonic() - start


# A Celery task enqueued after a write (dynroute.contrib.celery), on a real worker.


@pytest.fixture(scope="module")
def celery_app() -> Iterator[Any]:
    """A Celery app on the in-memory broker, its worker in a thread, with one task."""
    from celery import Celery  # noqa: PLC0415 - a test dependency, imported where used

    from tests.test_celery_pins import serving  # noqa: PLC0415 - the worker's set-up

    app = Celery(f"dynroute-positions-{os.getpid()}", set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        task_default_queue=f"dynroute-positions-{os.getpid()}",
        broker_transport_options={"polling_interval": 0.01},
    )

    @app.task(name="names_on", shared=False)
    def names_on(primary: str, replica: str) -> dict[str, Any]:
        with in_database(policy=PrimaryReplica(primary, (replica,))):
            items = Item.objects.all()
            return {"db": items.db, "names": sorted(item.name for item in items)}

    with serving(app):
        yield app


@pytest.mark.parametrize("installed", [True, False], ids=["carried", "not-installed"])
def test_replay_paused_a_task_enqueued_after_a_write_reads_it(
    replication: Replication,
    celery_app: Any,
    installed: bool,  # noqa: FBT001 - a parameter
) -> None:
    """The task's headers carry the position: it reads the primary until the replica has it.

    Without the integration the same task reads the paused replica: the row is missing.
    """
    from dynroute.contrib.celery import _pins  # noqa: PLC0415 - needs Celery

    settings = modify_settings(
        INSTALLED_APPS={"append": "dynroute.contrib.celery"} if installed else {}
    )
    with settings:
        try:
            replication.pause()
            with in_database(policy=replication.policy()):
                Item.objects.create(name="before the task")
                result = celery_app.tasks["names_on"].delay(
                    replication.primary, replication.replica
                )
            answer = result.get(timeout=30, interval=0.01)
        finally:
            _pins.disconnect()
    if installed:
        assert answer == {"db": replication.primary, "names": ["before the task"]}
    else:
        assert answer == {"db": replication.replica, "names": []}
