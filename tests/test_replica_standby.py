"""PrimaryReplica on a real PostgreSQL streaming standby of the test server.

Routing to two databases of one server proves nothing about replication: here the
replica is a hot standby fed by streaming replication (tests/standby.py starts it for
this module and stops it after). Pausing its replay makes a real, deterministic lag;
stopping it makes a real connection failure. Requests go through a real WSGI server
in threads, which closes its connections after each request as a deployment does.

PostgreSQL runs only. With ``CI=true`` a standby that cannot start fails the run.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import urllib.request
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING, Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.test import override_settings
from django.urls import path

from dynroute import PrimaryReplica, in_database
from dynroute.replicas import _health
from tests import settings as test_settings
from tests import standby as standby_server
from tests.helpers import unavailable
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [
    pytest.mark.skipif(
        test_settings.BACKEND != "postgresql",
        reason="the streaming-standby suite runs with DYNROUTE_TEST_DB=postgresql",
    ),
    pytest.mark.django_db(
        databases=["default", "standby", "other", "other_standby"], transaction=True
    ),
    # Starting a standby, and waiting for its replay while the server does other work
    # (another suite writing WAL), can take longer than the suite's usual bound.
    pytest.mark.timeout(300),
]

DOWN_SECONDS = 5


# The site the requests reach.


def names(request: HttpRequest) -> JsonResponse:
    """The item names this request can read, and where its reads go."""
    return JsonResponse(
        {"db": Item.objects.all().db, "names": sorted(Item.objects.values_list("name", flat=True))}
    )


def create(request: HttpRequest) -> JsonResponse:
    """Save an item named by the request (a form, or the query string of a GET)."""
    Item.objects.create(name=request.POST.get("name") or request.GET["name"])
    return JsonResponse({"db": Item.objects.all().db})


urlpatterns = [path("names/", names), path("create/", create)]

#: A tenant with a primary and a replica of its own: "other", and its copy on the standby.
TENANT_REPLICAS = PrimaryReplica("other", ("other_standby",))


def tenant_route(request: HttpRequest) -> PrimaryReplica | None:
    """DatabaseMiddleware's resolver: the tenant's primary and replica, or no block."""
    return TENANT_REPLICAS if "tenant" in request.GET else None


SITE = {
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": ["dynroute.middleware.PrimaryReplicaMiddleware"],
    "DYNROUTE_PRIMARY_REPLICA": {
        "primary": "default",
        "replicas": ["standby"],
        "pin_seconds": 60,
        "down_seconds": DOWN_SECONDS,
    },
    "ALLOWED_HOSTS": ["127.0.0.1"],
}


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        """Keep the test output clean."""


class Site:
    """The site served by a threaded WSGI server; ``get``/``post`` keep cookies."""

    def __init__(self) -> None:
        self.server = ThreadedWSGIServer(("127.0.0.1", 0), _Quiet)
        self.server.set_app(WSGIHandler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def client(self) -> Callable[..., dict[str, Any]]:
        """A client with a cookie jar of its own: ``request(path, data=None)``."""
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

        def request(url: str, data: dict[str, str] | None = None) -> dict[str, Any]:
            body = None if data is None else urllib.parse.urlencode(data).encode()
            with opener.open(self.base + url, data=body, timeout=30) as response:
                assert response.status == 200
                return json.loads(response.read())  # type: ignore[no-any-return]

        return request

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def standby(django_db_setup: None, django_db_blocker: Any) -> Iterator[standby_server.Standby]:
    """The standby, running for this module; the ``standby`` alias points at it."""
    with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
        try:
            server = standby_server.start(connections["default"].settings_dict, cursor)
        except standby_server.StandbyError as error:
            unavailable(f"the PostgreSQL standby could not start: {error}")
    for alias in ("standby", "other_standby"):
        connections.settings[alias]["PORT"] = str(server.port)
    try:
        yield server
    finally:
        with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
            connections["standby"].close()
            connections["other_standby"].close()
            server.remove(cursor)


@pytest.fixture
def cursors(standby: standby_server.Standby) -> Iterator[tuple[Any, Any]]:
    """A cursor on the primary and one on the standby (outside every block)."""
    with connections["default"].cursor() as primary, connections["standby"].cursor() as replica:
        replica.execute("SELECT pg_is_in_recovery()")
        assert replica.fetchone()[0] is True, "the standby alias is not a standby"
        yield primary, replica


@pytest.fixture
def paused(cursors: tuple[Any, Any]) -> Iterator[None]:
    """Replay paused on the standby: rows written from now on are not there yet."""
    primary, replica = cursors
    standby_server.wait_for_replay(primary, replica)
    replica.execute("SELECT pg_wal_replay_pause()")
    replica.execute("SELECT pg_get_wal_replay_pause_state()")
    assert replica.fetchone()[0] in {"paused", "pause requested"}
    try:
        yield
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")


@pytest.fixture
def site(standby: standby_server.Standby) -> Iterator[Site]:
    """The site, with the primary/replica middleware on the standby."""
    with override_settings(**SITE):
        serving = Site()
        try:
            yield serving
        finally:
            serving.close()


@pytest.fixture
def tenant_site(standby: standby_server.Standby) -> Iterator[Site]:
    """The site with tenants too: PrimaryReplicaMiddleware, then DatabaseMiddleware."""
    tenants = {
        "MIDDLEWARE": [
            "dynroute.middleware.PrimaryReplicaMiddleware",
            "dynroute.middleware.DatabaseMiddleware",
        ],
        "DYNROUTE_REQUEST_ROUTE": f"{__name__}.tenant_route",
    }
    with override_settings(**{**SITE, **tenants}):
        serving = Site()
        try:
            yield serving
        finally:
            serving.close()


def standby_policy(**options: Any) -> PrimaryReplica:
    """The policy of these tests: the standby is the only replica."""
    return PrimaryReplica("default", ("standby",), **options)


def test_a_row_written_on_the_primary_is_read_from_the_standby_once_replayed(
    cursors: tuple[Any, Any],
) -> None:
    """Streaming replication carries the row; the block reads it from the standby."""
    Item.objects.create(name="replicated")
    standby_server.wait_for_replay(*cursors)
    with in_database(policy=standby_policy()):
        assert Item.objects.all().db == "standby"
        assert list(Item.objects.values_list("name", flat=True)) == ["replicated"]
        with connections["standby"].cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            assert cursor.fetchone()[0] is True


@pytest.mark.usefixtures("paused")
def test_with_replay_paused_a_write_then_a_read_in_one_block_sees_the_row() -> None:
    """Pinning: the read after the write goes to the primary, which has the row."""
    with in_database(policy=standby_policy()):
        assert Item.objects.all().db == "standby"
        Item.objects.create(name="mine")
        assert Item.objects.filter(name="mine").exists()


@pytest.mark.usefixtures("paused")
def test_with_replay_paused_the_same_read_without_pinning_is_stale() -> None:
    """The lag is real: without pinning, the standby does not have the row yet."""
    with in_database(policy=standby_policy(pin_after_write=False)):
        Item.objects.create(name="mine")
        assert Item.objects.all().db == "standby"
        assert not Item.objects.filter(name="mine").exists()


@pytest.mark.usefixtures("paused")
def test_with_replay_paused_the_next_request_with_the_pin_cookie_sees_the_row(site: Site) -> None:
    """After a POST, the same client reads the primary; another client reads the standby."""
    writer = site.client()
    assert writer("/create/", {"name": "posted"}) == {"db": "default"}
    assert writer("/names/") == {"db": "default", "names": ["posted"]}
    assert site.client()("/names/") == {"db": "standby", "names": []}


@pytest.mark.usefixtures("paused")
def test_a_tenant_with_its_own_replica_reads_it_and_its_writes_pin_the_next_requests(
    tenant_site: Site,
) -> None:
    """The resolver's PrimaryReplica: the tenant's replica, pinned to its primary after a write.

    PrimaryReplicaMiddleware, placed before DatabaseMiddleware, carries the pin cookie
    across requests for every primary the request wrote to, the tenant's included.
    """
    writer = tenant_site.client()
    assert writer("/names/?tenant=a") == {"db": "other_standby", "names": []}
    assert writer("/create/?tenant=a", {"name": "tenant-row"}) == {"db": "other"}
    assert writer("/names/?tenant=a") == {"db": "other", "names": ["tenant-row"]}
    # Another client reads the tenant's replica, paused: the row is not there yet.
    assert tenant_site.client()("/names/?tenant=a") == {"db": "other_standby", "names": []}
    # Nothing reached the shared database; its own requests read its replica.
    assert tenant_site.client()("/names/") == {"db": "standby", "names": []}
    assert not Item.objects.using("default").exists()


@pytest.mark.usefixtures("paused")
def test_a_get_that_writes_to_the_tenants_primary_pins_the_next_requests(
    tenant_site: Site,
) -> None:
    """A safe method that writes to the tenant's primary (not the shared one) sets the pin too."""
    writer = tenant_site.client()
    assert writer("/create/?tenant=a&name=from-a-get") == {"db": "other"}
    assert writer("/names/?tenant=a") == {"db": "other", "names": ["from-a-get"]}


def test_the_standby_stopped_mid_run_then_started_again(
    standby: standby_server.Standby,
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """Requests keep succeeding on the primary; after down_seconds reads return to the standby."""
    now = [1000.0]
    monkeypatch.setattr(_health.time, "monotonic", lambda: now[0])
    request.addfinalizer(_health.mark_up)  # forgotten after the test, even if it fails
    client = site.client()
    Item.objects.create(name="row")
    assert client("/names/")["db"] == "standby"
    standby.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="dynroute"):
            for _ in range(3):
                assert client("/names/") == {"db": "default", "names": ["row"]}
        assert caplog.text.count("'standby' is down (OperationalError on connect)") == 1
    finally:
        standby.start()
    # Restarted, it replays what it missed (the server's other work can make that
    # take a while): wait, so that the read below has the row to see.
    connections["standby"].close()
    with connections["default"].cursor() as primary, connections["standby"].cursor() as replica:
        standby_server.wait_for_replay(primary, replica)
    assert client("/names/")["db"] == "default"  # not yet due
    now[0] += DOWN_SECONDS
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        assert client("/names/") == {"db": "standby", "names": ["row"]}
    assert "'standby' is back up" in caplog.text


def test_a_concurrent_runs_inactive_slot_survives_the_clean_up_and_a_dead_runs_goes() -> None:
    """Clean-up drops the slots of runs that died on this machine, never a live run's.

    A live run's slot is inactive between its base backup and its standby's start (and
    while a test stops the standby): dropping it there broke that run's standby, seen
    with two CI runs on one server ("requested WAL segment ... has already been
    removed"). Another machine's slots are left to it.
    """
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live run
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    names = [
        standby_server.slot_name(sleeper.pid),
        standby_server.slot_name(ended.pid),
        f"{standby_server.SLOT_PREFIX}elsewhere_{ended.pid}",
    ]
    try:
        with connections["default"].cursor() as cursor:
            for name in names:
                cursor.execute("SELECT pg_create_physical_replication_slot(%s)", [name])
            try:
                standby_server._drop_abandoned_slots(cursor)
                cursor.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s)",
                    [names],
                )
                left = {row[0] for row in cursor.fetchall()}
            finally:
                cursor.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = ANY(%s)",
                    [names],
                )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert left == {names[0], names[2]}
