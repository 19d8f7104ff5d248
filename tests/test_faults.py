"""Faults inside and around blocks, and what each must leave behind.

Each ends with a clear error where one is due, the route restored, nothing
registered, and the next block working (the ``survived`` fixture checks the last
three after every test).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import django
import pytest
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from dynroute import close_idle_connections, in_database
from dynroute.core._stack import CURRENT
from dynroute.exceptions import DatabaseConnectionError, UsageError
from dynroute.runtime import active_aliases
from tests import figures
from tests.helpers import cancel_once_ready
from tests.runtime import BACKEND, query, sessions
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]


class DeliberatePolicyError(Exception):
    """Raised by a policy on purpose."""


class Raising:
    """A policy whose decisions fail."""

    def db_for_read(self, model, /, **hints):
        raise DeliberatePolicyError

    def db_for_write(self, model, /, **hints):
        raise DeliberatePolicyError


@pytest.fixture
def survived(runtime):
    """Check, after the fault, that everything is back and the next block works."""
    before = set(connections.settings)
    yield
    assert CURRENT.get() is None
    assert set(connections.settings) == before
    assert not active_aliases()
    with in_database(runtime, write=True):
        Item.objects.create(name="next")
        assert Item.objects.filter(name="next").exists()
    with in_database("other"):
        assert Item.objects.count() == Item.objects.using("other").count()
    figures.record("faults_survived")


@pytest.mark.parametrize("target", ["alias", "configuration"])
def test_an_exception_in_the_body(runtime, survived, target):
    """The exception propagates unchanged; the block is undone."""

    @in_database(runtime if target == "configuration" else "other")
    def body() -> None:
        Item.objects.count()
        _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        body()


def test_a_policy_that_raises(survived):
    """The policy's own exception reaches the query that asked it; the block is undone."""
    with in_database(policy=Raising()):
        with pytest.raises(DeliberatePolicyError):
            Item.objects.count()
        with pytest.raises(DeliberatePolicyError):
            Item.objects.create(name="x")


def test_a_policy_that_answers_nonsense(survived):
    """A policy answering something other than an alias gets a UsageError naming it."""

    class Nonsense:
        def db_for_read(self, model, /, **hints):
            return 42

        def db_for_write(self, model, /, **hints):
            return None

    with in_database(policy=Nonsense()), pytest.raises(UsageError, match=r"Nonsense.db_for_read"):
        Item.objects.count()


@pytest.mark.parametrize("target", ["alias", "configuration"])
def test_keyboard_interrupt_inside_a_block(runtime, survived, target):
    """KeyboardInterrupt leaves the block like any exception."""

    @in_database(runtime if target == "configuration" else "other")
    def body() -> None:
        Item.objects.count()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        body()


@pytest.mark.parametrize("target", ["alias", "configuration"])
def test_cancellation_inside_an_async_block(runtime, survived, target):
    """CancelledError at an await inside ``async with`` undoes the block."""
    block = in_database(runtime if target == "configuration" else "other", write=True)

    async def victim(ready: asyncio.Event) -> None:
        async with block:
            await Item.objects.acount()
            ready.set()
            await asyncio.sleep(60)

    cancel_once_ready(victim)
    assert sessions(runtime, expected=0) == 0


def test_cancellation_while_connecting(runtime, survived, monkeypatch):
    """A task cancelled while its block connects: the connection is undone, then it stops."""
    connecting, release = threading.Event(), threading.Event()
    real = BaseDatabaseWrapper.ensure_connection

    def slow_connect(self):
        if self.alias.startswith("dynroute_"):
            connecting.set()
            assert release.wait(30), "the test never released the connection"
        return real(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", slow_connect)

    async def victim() -> None:
        async with in_database(runtime):
            pytest.fail("the body must not run")

    async def main() -> None:
        task = asyncio.create_task(victim())
        assert await asyncio.to_thread(connecting.wait, 30), "the block never connected"
        # The connection cannot finish before release is set: the cancellation
        # arrives while connecting, whenever the task gets to see it.
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    monkeypatch.undo()


@pytest.mark.skipif(
    BACKEND != "postgresql" or django.VERSION < (5, 1),
    reason="connection pools need PostgreSQL and Django 5.1+",
)
def test_cancellation_while_leaving(runtime, survived, monkeypatch):
    """A task cancelled while its block closes its connection: the close ends, then it stops.

    Only a pooled configuration's exit waits for the ORM's thread (to return the
    connection to its pool there); any other exit closes without awaiting anything.
    """
    runtime = {**runtime, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2, "timeout": 10}}}
    closing, release = threading.Event(), threading.Event()
    real = BaseDatabaseWrapper.close

    def slow_close(self):
        if self.alias.startswith("dynroute_"):
            closing.set()
            assert release.wait(30), "the test never released the close"
        return real(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "close", slow_close)

    async def victim() -> None:
        async with in_database(runtime):
            await Item.objects.acount()

    async def main() -> None:
        task = asyncio.create_task(victim())
        assert await asyncio.to_thread(closing.wait, 30), "the block never closed"
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    monkeypatch.undo()
    assert sessions(runtime, expected=0) == 0


@pytest.mark.skipif(BACKEND == "sqlite", reason="SQLite has no server connection to kill")
def test_the_server_connection_killed_mid_block(runtime, survived):
    """The next query raises Django's error; leaving closes the dead connection."""
    with pytest.raises(DatabaseError), in_database(runtime, write=True) as route:  # noqa: PT012 - the kill happens inside the block
        Item.objects.create(name="before")
        kill(connections[route.alias])
        Item.objects.create(name="after the kill")
    assert sessions(runtime, expected=0) == 0


@pytest.mark.skipif(BACKEND == "sqlite", reason="SQLite has no server connection to kill")
def test_a_kept_connection_killed_while_idle_is_replaced_with_health_checks(runtime, survived):
    """Reuse with CONN_HEALTH_CHECKS: the next block reconnects by itself."""
    reusing = {**runtime, "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}
    with in_database(reusing) as route:
        Item.objects.count()
        kill(connections[route.alias])
    with in_database(reusing):
        assert Item.objects.count() == 0
    assert close_idle_connections() == 1


@pytest.mark.skipif(BACKEND == "sqlite", reason="SQLite has no server connection to kill")
def test_a_kept_connection_killed_while_idle_without_health_checks(runtime, survived):
    """Without health checks the first query fails, as in Django; the next block works."""
    reusing = {**runtime, "CONN_MAX_AGE": 600}
    with in_database(reusing) as route:
        Item.objects.count()
        kill(connections[route.alias])
    with pytest.raises(DatabaseError), in_database(reusing):
        Item.objects.count()
    with in_database(reusing):
        assert Item.objects.count() == 0
    close_idle_connections()


def test_the_server_unreachable_at_entry(runtime, survived):
    """DatabaseConnectionError on entry; nothing registered."""
    if BACKEND == "sqlite":
        unreachable = {**runtime, "NAME": "/nonexistent-dynroute/x.sqlite3"}
    else:
        unreachable = {**runtime, "HOST": "127.0.0.1", "PORT": "1"}
    with pytest.raises(DatabaseConnectionError), in_database(unreachable):
        pytest.fail("the body must not run")


def test_teardown_on_a_broken_connection(runtime, survived, monkeypatch, caplog):
    """A connection whose close fails is still closed at the server; the block ends cleanly.

    Django forgets the driver's connection when its close fails; dynroute closes
    the driver's connection itself, and logs the failure (without details).
    """
    with in_database(runtime) as route:
        Item.objects.count()
        wrapper = connections[route.alias]

        def broken_close():
            msg = "server closed the connection unexpectedly"
            raise DatabaseError(msg)

        monkeypatch.setattr(wrapper, "_close", broken_close)
        assert sessions(runtime, expected=1) == 1
    assert sessions(runtime, expected=0) == 0
    assert [record.getMessage() for record in caplog.records] == [
        f"closing runtime database {route.alias!r} failed: DatabaseError"
    ]
    monkeypatch.undo()


def test_teardown_when_even_the_drivers_close_fails(runtime, survived, monkeypatch, caplog):
    """Django's close and the driver's both fail: logged, and the block still ends cleanly."""

    class Unclosable:
        """The driver's connection, whose close fails too."""

        def __init__(self, real):
            self.real = real

        def close(self):
            msg = "already gone"
            raise OSError(msg)

    with in_database(runtime) as route:
        Item.objects.count()
        wrapper = connections[route.alias]
        real = wrapper.connection

        def broken_close():
            msg = "server closed the connection unexpectedly"
            raise DatabaseError(msg)

        monkeypatch.setattr(wrapper, "_close", broken_close)
        wrapper.connection = Unclosable(real)
    real.close()  # what the driver could not do, for the server's sake
    assert [record.getMessage() for record in caplog.records] == [
        f"closing runtime database {route.alias!r} failed: DatabaseError"
    ]
    monkeypatch.undo()


def test_teardown_of_another_threads_connection_whose_close_fails(runtime, survived, caplog):
    """A thread's connection left open in a block: closed at the end, a failure logged."""

    class Unclosable:
        """The driver's connection, whose close fails."""

        def __init__(self, real):
            self.real = real

        def close(self):
            msg = "already gone"
            raise OSError(msg)

    opened, done = threading.Event(), threading.Event()
    reals = []

    def work() -> None:
        Item.objects.count()  # inherits the route: opens the thread's own connection
        wrapper = connections[route.alias]
        reals.append(wrapper.connection)
        wrapper.connection = Unclosable(wrapper.connection)
        opened.set()
        assert done.wait(timeout=30)

    with in_database(runtime) as route:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        worker.start()
        assert opened.wait(timeout=30)
    done.set()
    worker.join(timeout=30)
    reals[0].close()  # what the driver could not do, for the server's sake
    assert [record.getMessage() for record in caplog.records] == [
        (
            f"closing a connection to runtime database {route.alias!r} left open by another "
            "thread: work started inside a block should finish inside it"
        ),
        f"closing runtime database {route.alias!r} failed: OSError",
    ]


def kill(wrapper: BaseDatabaseWrapper) -> None:
    """End a Django connection's server session from another session."""
    if BACKEND == "postgresql":
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        query(None, "SELECT pg_terminate_backend(%s)", [pid])
    else:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (ident,) = cursor.fetchone()
        query(None, f"KILL {int(ident)}")
