"""The Celery integration: a task reads what the code that enqueued it wrote.

``dynroute.contrib.celery``, switched on as users do (its app added to
``INSTALLED_APPS``), puts the pins of the enqueuing code in the message's headers and
applies them in the worker. Tasks are published for real, to Celery's in-memory broker
(eager mode publishes nothing), then read back from the broker or run by a worker in a
thread of this process (``celery.contrib.testing.worker``). The "replica" never
receives the primary's rows (tests/settings.py): a read that went to it does not see
a row written to the primary, as a replica whose replay is paused would not.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from celery import Celery, signals
from celery.contrib.testing.worker import start_worker
from django.apps import apps
from django.db import connections, transaction
from django.test import modify_settings

from dynroute import PrimaryReplica, in_database
from dynroute.contrib.celery import HEADER, VERSION, _pins
from dynroute.replicas import Needing, pack, reached, unpack
from dynroute.replicas._positions import NEEDS, PRIMARY_ONLY, Lsn, written
from tests import settings as test_settings
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.django_db(databases=["default", "replica1"], transaction=True)

#: The header of a task that needs the primary's latest write (what SQLite carries).
PRIMARY_HEADER = {"v": 1, "positions": pack({"default": PRIMARY_ONLY})}

_apps = itertools.count(1)


def replicas(**options: Any) -> PrimaryReplica:
    """A PrimaryReplica on default and one test replica."""
    return PrimaryReplica("default", ("replica1",), **options)


def read_here(*, pin_after_write: bool = True) -> dict[str, Any]:
    """Where a block's reads go here, and the Items they find."""
    with in_database(policy=replicas(pin_after_write=pin_after_write)):
        items = Item.objects.all()
        return {"db": items.db, "names": [item.name for item in items]}


@pytest.fixture
def installed() -> Iterator[None]:
    """The integration switched on as users do it: its app in ``INSTALLED_APPS``."""
    _pins._WARNED.clear()
    with modify_settings(INSTALLED_APPS={"append": "dynroute.contrib.celery"}):
        yield
    # A task's result is stored before its postrun: the worker may still be in it.
    deadline = time.monotonic() + 10
    while _pins._ACTIVE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _pins._ACTIVE, "a task's pins were left entered"
    # Django runs ready() when the app is added, and has nothing to undo it.
    _pins.disconnect()


def make_app() -> Celery:
    """A Celery app on the in-memory broker, with a queue of its own, and its tasks."""
    number = next(_apps)
    app = Celery(f"dynroute-tests-{number}", set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        task_default_queue=f"dynroute-tests-{os.getpid()}-{number}",
        broker_connection_retry_on_startup=False,
        broker_transport_options={"polling_interval": 0.01},
    )

    @app.task(name="where", shared=False)
    def where(*, pin_after_write: bool = True) -> dict[str, Any]:
        return read_here(pin_after_write=pin_after_write)

    @app.task(name="needs", shared=False)
    def needs() -> str | None:
        found = NEEDS.get()
        return None if found is None else pack(found)

    @app.task(name="fail", shared=False)
    def fail() -> None:
        read_here()
        msg = "the task fails"
        raise RuntimeError(msg)

    @app.task(name="retry_once", shared=False, bind=True, max_retries=1)
    def retry_once(self: Any) -> dict[str, Any]:
        if not self.request.retries:
            raise self.retry(countdown=0)
        return read_here()

    @app.task(name="enqueue", shared=False)
    def enqueue() -> str:
        return str(where.delay().id)

    return app


@pytest.fixture
def app(installed: None) -> Celery:
    """An app whose published messages stay in its queue (no worker takes them)."""
    return make_app()


@contextlib.contextmanager
def serving(app: Celery) -> Iterator[Celery]:
    """A worker for ``app``, running in a thread (it takes 4 s to stop).

    The worker leaves the process's logging as it found it: left to itself, it sets
    the root logger to ERROR, which would hide the warnings later tests look for.
    """

    def leave_logging_alone(**kwargs: Any) -> None:
        """Connected, it keeps Celery from configuring logging."""

    with pytest.MonkeyPatch.context() as patch:
        for name in ("CELERY_LOG_LEVEL", "CELERY_LOG_FILE"):
            patch.setenv(name, "")
        # Celery's logging.captureWarnings(True), undone.
        patch.setattr(warnings, "showwarning", warnings.showwarning)
        patch.setattr(logging, "_warnings_showwarning", logging._warnings_showwarning)
        signals.setup_logging.connect(leave_logging_alone, weak=False)
        try:
            with start_worker(app, perform_ping_check=False, shutdown_timeout=30):
                yield app
        finally:
            signals.setup_logging.disconnect(leave_logging_alone)


@pytest.fixture(scope="module")
def running() -> Iterator[Celery]:
    """An app with a worker running in a thread, for the module."""
    with serving(make_app()) as app:
        yield app


@pytest.fixture
def worker(installed: None, running: Celery) -> Celery:
    """The app whose tasks a worker runs (one at a time, in the worker's thread)."""
    return running


def published(app: Celery) -> dict[str, Any]:
    """The headers of the one message waiting in ``app``'s queue (taken off it)."""
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(app.conf.task_default_queue)
        message = queue.get(timeout=5)
        message.ack()
        assert not queue.qsize(), "more than one message was published"
        queue.close()
    return dict(message.headers)


def run(app: Celery, name: str, **options: Any) -> Any:
    """Publish task ``name`` (``apply_async`` options), wait for its result."""
    return app.tasks[name].apply_async(**options).get(timeout=30, interval=0.01)


# Switching it on


def test_the_app_in_installed_apps_is_the_switch(app):
    """Without the app, a task enqueued after a write carries nothing; with it, its pin."""
    assert apps.is_installed("dynroute.contrib.celery")
    _pins.disconnect()  # as if the app were not installed
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
        app.tasks["where"].delay()
        assert HEADER not in published(app)
        apps.get_app_config("dynroute_celery").ready()
        app.tasks["where"].delay()
        assert HEADER in published(app)


def test_ready_twice_connects_each_receiver_once(app):
    """Django may populate the apps again (tests do): the receivers stay connected once."""
    apps.get_app_config("dynroute_celery").ready()
    for signal in (signals.before_task_publish, signals.task_prerun, signals.task_postrun):
        ours = [key for key, _ in signal.receivers if key[0] == "dynroute.contrib.celery"]
        assert len(ours) == 1


# What a published task carries


def test_a_task_enqueued_after_a_write_carries_the_primarys_position(app):
    """The header holds the primary's position read after the write (SQLite: its latest write)."""
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
        app.tasks["where"].delay()
    header = published(app)[HEADER]
    assert header.keys() == {"v", "positions"}
    assert header["v"] == VERSION == 1
    positions = unpack(header["positions"])
    assert positions is not None
    assert positions.keys() == {"default"}
    if test_settings.BACKEND == "sqlite":
        assert positions["default"] is PRIMARY_ONLY
        assert header["positions"] == "eyJkZWZhdWx0IjogInAifQ"  # {"default": "p"}
    else:
        assert positions["default"] is not PRIMARY_ONLY
        assert reached(written(connections["default"]), positions["default"])


def test_a_write_under_a_time_pin_carries_the_primarys_latest_write(app):
    """With ``pin="time"`` the header says "the primary", on every backend."""
    with in_database(policy=replicas(pin="time")):
        Item.objects.create(name="written")
        app.tasks["where"].delay()
    assert published(app)[HEADER] == PRIMARY_HEADER


def test_a_task_enqueued_on_commit_inside_the_block_carries_the_write(app):
    """``transaction.on_commit`` inside the block: the position read after the commit."""
    with in_database(policy=replicas()), transaction.atomic("default"):
        Item.objects.create(name="written")
        transaction.on_commit(app.tasks["where"].delay, using="default")
    positions = unpack(published(app)[HEADER]["positions"])
    assert positions is not None
    assert positions.keys() == {"default"}
    if test_settings.BACKEND != "sqlite":
        assert positions["default"] is not PRIMARY_ONLY  # the commit is done: a position


def test_the_positions_the_code_was_given_are_carried(app):
    """Code that needs positions (a request's cookie, its task's header) passes them on."""
    given = {"default": Lsn(7, 42)}
    with Needing(given):
        app.tasks["where"].delay()
    assert unpack(published(app)[HEADER]["positions"]) == given


def test_a_task_enqueued_outside_any_block_carries_nothing(app):
    """No block, no pin: the headers are as Celery made them."""
    Item.objects.create(name="written")
    app.tasks["where"].delay()
    assert HEADER not in published(app)


def test_a_task_enqueued_in_a_block_without_a_write_carries_nothing(app):
    """Reads alone pin nothing."""
    with in_database(policy=replicas()):
        list(Item.objects.all())
        app.tasks["where"].delay()
    assert HEADER not in published(app)


def test_a_task_enqueued_after_the_block_exited_carries_nothing(app):
    """The documented limit: the write is forgotten when the block exits."""
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
    app.tasks["where"].delay()
    assert HEADER not in published(app)


@pytest.mark.skipif(
    test_settings.BACKEND == "sqlite", reason="SQLite has no position to read: no query"
)
def test_a_task_enqueued_from_an_event_loop_says_how_to_carry_the_write(app, caplog):
    """Reading a position is a query, refused in an event loop: a warning names the fix."""

    async def main() -> None:
        async with in_database(policy=replicas()):
            await Item.objects.acreate(name="written")
            app.tasks["where"].delay()
            assert HEADER not in published(app)
            await sync_to_async(app.tasks["where"].delay)()
            assert HEADER in published(app)

    with caplog.at_level(logging.WARNING, logger="dynroute"):
        async_to_sync(main)()
    [record] = [r for r in caplog.records if "sync_to_async(task.delay)" in r.getMessage()]
    assert "where" in record.getMessage()


# What a task sees in the worker


@pytest.mark.parametrize("pin_after_write", [True, False])
def test_a_task_enqueued_after_a_write_reads_it(worker, pin_after_write):
    """The task's block reads the primary, so it finds the row, whatever its own options."""
    with in_database(policy=replicas(pin="time")):
        Item.objects.create(name="written")
        result = worker.tasks["where"].delay(pin_after_write=pin_after_write)
    assert result.get(timeout=30, interval=0.01) == {"db": "default", "names": ["written"]}


def test_a_task_without_a_pin_reads_the_replica(worker):
    """Nothing carried: the task's block reads its replica (which has no row)."""
    Item.objects.create(name="written")
    assert run(worker, "where") == {"db": "replica1", "names": []}


def test_a_task_enqueued_by_a_task_carries_its_pins_on(worker):
    """A task's pins go into the tasks it enqueues (a chain, a fan-out)."""
    with in_database(policy=replicas(pin="time")):
        Item.objects.create(name="written")
        child = worker.tasks["enqueue"].delay().get(timeout=30, interval=0.01)
    assert worker.AsyncResult(child).get(timeout=30, interval=0.01) == {
        "db": "default",
        "names": ["written"],
    }


def test_a_retried_task_keeps_its_pins(worker):
    """A retry is published again, by the task: with the pins the task had."""
    with in_database(policy=replicas(pin="time")):
        Item.objects.create(name="written")
        result = worker.tasks["retry_once"].delay()
    assert result.get(timeout=30, interval=0.01) == {"db": "default", "names": ["written"]}


@pytest.mark.parametrize(
    "header",
    [
        "p",
        42,
        {"positions": PRIMARY_HEADER["positions"]},
        {"v": "1", "positions": PRIMARY_HEADER["positions"]},
        {"v": True, "positions": PRIMARY_HEADER["positions"]},
        {"v": 1, "positions": "%%%"},
        {"v": 1, "positions": pack({"default": PRIMARY_ONLY})[:-2]},
        {"v": 1},
    ],
)
def test_a_malformed_header_is_ignored_with_a_warning(worker, caplog, header):
    """The task runs, without a pin, and the log says which task had what."""
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        task = worker.tasks["where"].apply_async(headers={HEADER: header})
        assert task.get(timeout=30, interval=0.01) == {"db": "replica1", "names": []}
    [record] = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert f"where[{task.id}]" in record.getMessage()
    assert record.levelno == logging.WARNING


def test_a_header_of_another_version_is_ignored_with_one_warning_per_version(worker, caplog):
    """A newer enqueuer's header is not guessed at; the log names its version, once."""
    future = {**PRIMARY_HEADER, "v": 2}
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for header in (future, future, {**future, "v": 3}):
            assert run(worker, "where", headers={HEADER: header})["db"] == "replica1"
    messages = [r.getMessage() for r in caplog.records if r.name == "dynroute"]
    assert len(messages) == 2
    assert "version 2 of the 'dynroute' header" in messages[0]
    assert "version 3 of the 'dynroute' header" in messages[1]


# Nothing leaks


def test_a_tasks_pins_end_with_it(worker):
    """In the worker's thread, after a task with pins: nothing needed, in any later task."""
    seen: list[Any] = []
    done = threading.Event()

    def after(**kwargs: Any) -> None:  # connected after the app's: runs after it
        seen.append((threading.get_ident(), NEEDS.get()))
        if len(seen) == 3:
            done.set()

    signals.task_postrun.connect(after, weak=False)
    try:
        assert run(worker, "needs", headers={HEADER: PRIMARY_HEADER}) == "eyJkZWZhdWx0IjogInAifQ"
        with pytest.raises(RuntimeError, match="the task fails"):
            run(worker, "fail", headers={HEADER: PRIMARY_HEADER})
        assert run(worker, "needs") is None
        assert done.wait(10), "a task's postrun did not run"  # it runs after the result
    finally:
        signals.task_postrun.disconnect(after)
    assert [needs for _, needs in seen] == [None, None, None]
    assert len({thread for thread, _ in seen}) == 1
    assert threading.get_ident() not in {thread for thread, _ in seen}


# Eager tasks: never published, run in the caller's context


def test_an_eager_task_runs_with_its_callers_pins(app):
    """``task_always_eager``: nothing is published; the caller's pins already apply."""
    app.conf.task_always_eager = True
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
        assert app.tasks["where"].delay().get() == {"db": "default", "names": ["written"]}
        assert app.tasks["needs"].delay().get() is None
    assert NEEDS.get() is None
    app.conf.task_always_eager = False
    with app.connection_for_read() as connection:
        assert not connection.SimpleQueue(app.conf.task_default_queue).qsize()


def test_an_eager_task_applies_a_header_given_to_it(app):
    """``apply(headers=...)`` runs here with the header's pins, and ends them."""
    Item.objects.create(name="written")
    result = app.tasks["where"].apply(headers={HEADER: PRIMARY_HEADER})
    assert result.get() == {"db": "default", "names": ["written"]}
    assert app.tasks["where"].apply().get() == {"db": "replica1", "names": []}
    assert NEEDS.get() is None
