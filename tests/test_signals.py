"""dynroute.signals: what receivers are told, and that nothing changes for the blocks."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections
from django.test import override_settings

from dynroute import (
    DatabaseConfiguration,
    InDatabase,
    PrimaryReplica,
    _switches,
    close_idle_connections,
    current_route,
    in_database,
    observe,
    signals,
    tenants,
)
from dynroute.exceptions import (
    DatabaseConnectionError,
    RouteLockedError,
    UnknownDatabaseError,
    UsageError,
)
from dynroute.observe import _signals as _observed
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from django.dispatch import Signal

pytestmark = pytest.mark.django_db(databases=["default", "other", "replica1", "replica2"])

PASSWORD = "s3cret-password"


class Recorder:
    """Receivers for every dynroute signal, recording what each was sent."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.receivers: list[tuple[Signal, Any]] = []
        for name in signals.__all__:
            signal = getattr(signals, name)
            if isinstance(signal, signals.DynrouteSignal):
                receiver = self._receiver(name)
                signal.connect(receiver, weak=False)
                self.receivers.append((signal, receiver))

    def _receiver(self, name: str) -> Any:
        def receive(sender: object, **kwargs: Any) -> None:
            # Where the code is routed when the receiver runs.
            route = current_route()
            routed = None if route is None else route.alias
            self.events.append((name, {"sender": sender, "routed": routed, **kwargs}))

        return receive

    def disconnect(self) -> None:
        for signal, receiver in self.receivers:
            signal.disconnect(receiver)

    def of(self, *names: str) -> list[tuple[str, dict[str, Any]]]:
        """The events of these signals, in order."""
        return [(name, sent) for name, sent in self.events if name in names]

    def blocks(self) -> list[tuple[str, str | None, int]]:
        """``(signal, route alias, depth)`` of the block events, in order."""
        return [
            (name.removeprefix("block_"), sent["route"].alias, sent["depth"])
            for name, sent in self.of("block_entered", "block_exited")
        ]


@pytest.fixture(autouse=True)
def _runtime_databases_allowed(dynroute_runtime_databases: None) -> None:
    """Runtime configurations may connect in these tests (see dynroute.testing)."""


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """Every dynroute signal recorded, for the test."""
    recorded = Recorder()
    yield recorded
    recorded.disconnect()


# Blocks


def test_blocks_report_entry_and_exit_with_route_depth_and_duration(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nested blocks: entered outermost first, exited innermost first, each with its depth."""
    ticks = iter([100.0, 101.0, 104.0, 109.0])  # outer in, inner in, inner out, outer out
    monkeypatch.setattr(_observed, "_clock", lambda: next(ticks))
    outer = in_database("other")
    with outer, in_database("default", write=True) as inner:
        pass
    assert recorder.blocks() == [
        ("entered", "other", 1),
        ("entered", "default", 2),
        ("exited", "default", 2),
        ("exited", "other", 1),
    ]
    entered, inner_exit, outer_exit = (
        recorder.events[0][1],
        recorder.events[2][1],
        recorder.events[3][1],
    )
    assert entered["block"] is outer_exit["block"] is outer
    assert entered["sender"] is outer_exit["sender"] is type(outer)
    assert inner_exit["route"] is inner
    # Entered: the block's route is in force; exited: the enclosing one is back.
    assert entered["routed"] == "other"
    assert inner_exit["routed"] == "other"
    assert outer_exit["routed"] is None
    assert (inner_exit["duration"], outer_exit["duration"]) == (3.0, 9.0)


def test_a_block_checked_before_the_first_receiver_reports_its_next_entry() -> None:
    """Connecting the first receiver reaches blocks that already skip their entry checks."""
    block = in_database("other")
    for _ in range(2):
        with block:
            pass
    assert not block._setup  # the usual entry: nothing but the route
    recorded = Recorder()
    try:
        for _ in range(2):  # every entry while listening, not only the first
            with block:
                pass
    finally:
        recorded.disconnect()
    assert recorded.blocks() == [("entered", "other", 1), ("exited", "other", 1)] * 2
    with block:
        pass
    assert len(recorded.events) == 4  # disconnected: nothing more


def test_a_block_let_skip_its_checks_as_another_thread_starts_listening_is_rearmed() -> None:
    """The switch thrown between a block's checked entry and its joining the skipping ones.

    The thread that threw it re-armed the blocks it knew, not this one: the block re-arms
    itself, so that its next entry reports.
    """
    block = in_database("other")
    with block:
        pass
    assert not block._setup
    _switches.listening = True  # thrown, the blocks not re-armed
    try:
        block._setup = False
        _switches.skip_checks(block)
    finally:
        _switches.listening = False
    assert block._setup is True


def test_one_receiver_of_one_signal_reaches_blocks_that_skip_their_checks() -> None:
    """The first receiver, of block_exited alone, hears the next exit of a block checked before."""
    block = in_database("other")
    with block:
        pass
    heard: list[str | None] = []

    def receiver(sender: object, route: Any, **kwargs: Any) -> None:
        heard.append(route.alias)

    signals.block_exited.connect(receiver)
    try:
        with block:
            pass
    finally:
        signals.block_exited.disconnect(receiver)
    assert heard == ["other"]


def test_without_receivers_blocks_time_nothing() -> None:
    """No receiver: an entry records no timing (its usual path is untouched)."""
    assert not _switches.listening
    with in_database("other"), in_database("default"):
        assert observe.get_timing() is None


def test_an_entry_before_the_receiver_is_not_reported_on_exit() -> None:
    """A receiver connected inside a block hears of the blocks entered after it only."""
    with in_database("other"):
        recorded = Recorder()
        try:
            with in_database("default"):
                pass
        finally:
            recorded.disconnect()
    assert recorded.blocks() == [("entered", "default", 2), ("exited", "default", 2)]


def test_an_entry_timed_while_listening_is_closed_after_the_last_receiver_goes() -> None:
    """Disconnecting inside a block: its exit still clears its timing (the leak guard checks)."""
    recorded = Recorder()
    with in_database("other"):
        recorded.disconnect()
        assert observe.get_timing() is not None
    assert observe.get_timing() is None
    assert recorded.blocks() == [("entered", "other", 1)]


def test_a_receiver_that_raises_changes_nothing_for_the_block(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The body runs routed, the route is restored, its own error passes; Django logs it."""

    def failing(sender: object, **kwargs: Any) -> None:
        msg = "a receiver's bug"
        raise RuntimeError(msg)

    signals.block_entered.connect(failing)
    signals.block_exited.connect(failing)
    try:
        with caplog.at_level(logging.ERROR, logger="django.dispatch"):
            with in_database("other", write=True):
                Item.objects.create(name="made")
                assert Item.objects.all().db == "other"
            assert current_route() is None
            with pytest.raises(KeyError, match="the body's"), in_database("other"):
                raise KeyError("the body's")  # noqa: EM101 - a test's own error
            assert current_route() is None
    finally:
        signals.block_entered.disconnect(failing)
        signals.block_exited.disconnect(failing)
    assert Item.objects.using("other").filter(name="made").exists()
    logged = [record for record in caplog.records if record.name == "django.dispatch"]
    assert len(logged) == 4  # two blocks, each entered and exited


def test_a_block_dropped_by_its_enclosing_exit_is_not_reported(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A block never left (dropped with the enclosing one) sends no exit of its own."""
    with caplog.at_level(logging.WARNING, logger="dynroute"), in_database("other"):
        in_database("default").__enter__()
    assert recorder.blocks() == [
        ("entered", "other", 1),
        ("entered", "default", 2),
        ("exited", "other", 1),
    ]
    assert "dropped with it" in caplog.text


def test_async_blocks_report_per_task(recorder: Recorder) -> None:
    """Concurrent tasks each report their own blocks and depths."""

    async def task(alias: str) -> None:
        async with in_database("other"):
            await asyncio.sleep(0)
            async with in_database(alias):
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(task("default"), task("replica1"))

    asyncio.run(main())
    entered = sorted(
        (sent["route"].alias, sent["depth"]) for _, sent in recorder.of("block_entered")
    )
    exited = sorted((sent["route"].alias, sent["depth"]) for _, sent in recorder.of("block_exited"))
    assert entered == exited == [("default", 2), ("other", 1), ("other", 1), ("replica1", 2)]


def test_a_receiver_for_one_sender_hears_its_blocks_and_disconnects_by_sender() -> None:
    """connect(sender=...) and disconnect(sender=...) work as on any Django signal."""
    heard: list[str | None] = []

    def receiver(sender: object, route: Any, **kwargs: Any) -> None:
        heard.append(route.alias)

    signals.block_entered.connect(receiver, sender=InDatabase)
    try:
        with in_database("other"):
            pass
    finally:
        assert signals.block_entered.disconnect(receiver, sender=InDatabase)
    assert heard == ["other"]
    assert not _switches.listening


def test_a_dispatch_uid_connects_a_receiver_once_and_disconnects_it() -> None:
    """connect(dispatch_uid=...) and disconnect(dispatch_uid=...) work as on any Django signal."""
    heard: list[str] = []

    def first(sender: object, **kwargs: Any) -> None:
        heard.append("first")

    def second(sender: object, **kwargs: Any) -> None:
        heard.append("second")  # pragma: no cover - never connected

    signals.block_entered.connect(first, dispatch_uid="tests.once")
    signals.block_entered.connect(second, dispatch_uid="tests.once")  # that uid is taken
    try:
        with in_database("other"):
            pass
    finally:
        assert signals.block_entered.disconnect(dispatch_uid="tests.once")
    assert heard == ["first"]
    assert not _switches.listening


def test_a_coroutine_function_is_refused_as_a_receiver() -> None:
    """Receivers are called synchronously: a coroutine function would never run."""

    async def receiver(sender: object, **kwargs: Any) -> None:
        pass

    with pytest.raises(UsageError, match="plain function"):
        signals.block_entered.connect(receiver)
    assert not _switches.listening


# Runtime configurations


def secret_settings(path: Path, **extra: Any) -> dict[str, Any]:
    """A SQLite runtime configuration with a password (ignored by SQLite) to hide."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "PASSWORD": PASSWORD,
        "OPTIONS": {"timeout": 5},
        **extra,
    }


def assert_no_password(recorder: Recorder) -> None:
    """No argument any receiver got shows the password, in its repr or str."""
    for _, sent in recorder.events:
        for value in sent.values():
            assert PASSWORD not in repr(value)
            assert PASSWORD not in str(value)


def test_a_configuration_reports_registration_then_closing_after_its_last_block(
    recorder: Recorder, tmp_path: Path
) -> None:
    """Teardown mode: registered on entry, closed ("last block") on the last exit."""
    settings = secret_settings(tmp_path / "tenant.db")
    with in_database(settings) as outer, in_database(settings):
        pass
    assert [name for name, _ in recorder.events] == [
        "configuration_registered",
        "block_entered",
        "block_entered",
        "block_exited",
        "block_exited",
        "configuration_closed",
    ]
    registered = recorder.events[0][1]
    assert registered["alias"] == outer.alias
    assert registered["engine"] == "django.db.backends.sqlite3"
    assert registered["name"] == str(tmp_path / "tenant.db")
    assert registered["host"] == ""
    assert registered["reuse"] is False
    closed = recorder.events[-1][1]
    assert (closed["alias"], closed["reason"]) == (outer.alias, "last block")
    assert registered["sender"] is closed["sender"] is DatabaseConfiguration
    assert_no_password(recorder)


def test_kept_configurations_report_eviction_and_idle_close(
    recorder: Recorder, tmp_path: Path
) -> None:
    """Reuse mode: over the idle bound, the oldest is evicted; close_idle_connections() the rest."""
    first = secret_settings(tmp_path / "first.db", CONN_MAX_AGE=60)
    second = secret_settings(tmp_path / "second.db", CONN_MAX_AGE=60)
    with override_settings(DYNROUTE_MAX_IDLE_CONNECTIONS=1):
        with in_database(first) as one:  # entry connects: a connection to keep
            pass
        with in_database(second) as two:
            pass
        close_idle_connections()
    assert [
        (sent["alias"], sent["reuse"]) for _, sent in recorder.of("configuration_registered")
    ] == [(one.alias, True), (two.alias, True)]
    assert [(sent["alias"], sent["reason"]) for _, sent in recorder.of("configuration_closed")] == [
        (one.alias, "eviction"),
        (two.alias, "idle close"),
    ]
    assert_no_password(recorder)


def test_a_configuration_that_cannot_connect_is_reported_closed(
    recorder: Recorder, tmp_path: Path
) -> None:
    """Registered, then closed ("last block") when its connection fails; no block event."""
    settings = secret_settings(tmp_path / "missing" / "folder" / "x.db")
    with pytest.raises(DatabaseConnectionError), in_database(settings):
        pass
    assert [(name, sent.get("reason")) for name, sent in recorder.events] == [
        ("configuration_registered", None),
        ("configuration_closed", "last block"),
    ]
    assert_no_password(recorder)


def test_configuration_receivers_run_outside_dynroutes_lock(tmp_path: Path) -> None:
    """A receiver may wait for another thread's block on a runtime configuration."""
    seen: list[str] = []
    waited: list[bool] = []  # asserted outside: send_robust would swallow the failure

    def in_a_thread() -> None:
        with in_database(secret_settings(tmp_path / "other.db")) as route:
            seen.append(route.alias)
        connections.close_all()

    def receiver(sender: object, alias: str, **kwargs: Any) -> None:
        if not waited:
            worker = threading.Thread(target=in_a_thread)
            worker.start()
            worker.join(timeout=10)
            waited.append(worker.is_alive())

    signals.configuration_closed.connect(receiver)
    try:
        with in_database(secret_settings(tmp_path / "tenant.db")):
            pass
    finally:
        signals.configuration_closed.disconnect(receiver)
    assert waited == [False], "the receiver's thread waited for dynroute's lock"
    assert len(seen) == 1


def test_configuration_signals_arrive_in_the_order_of_the_events(tmp_path: Path) -> None:
    """A receiver that opens another configuration hears of it after the event it handles."""
    heard: list[tuple[str, str]] = []
    second = secret_settings(tmp_path / "second.db")

    def receiver(sender: object, alias: str, signal: Any, **kwargs: Any) -> None:
        kind = "registered" if signal is signals.configuration_registered else "closed"
        heard.append((kind, alias))
        if kind == "closed" and len(heard) == 2:
            with in_database(second):  # registered and closed inside this receiver
                pass

    signals.configuration_registered.connect(receiver)
    signals.configuration_closed.connect(receiver)
    try:
        with in_database(secret_settings(tmp_path / "first.db")) as first:
            pass
    finally:
        signals.configuration_registered.disconnect(receiver)
        signals.configuration_closed.disconnect(receiver)
    other = in_database(second).route.alias
    assert heard == [
        ("registered", first.alias),
        ("closed", first.alias),
        ("registered", other),
        ("closed", other),
    ]


def test_a_collected_receiver_stops_the_reports() -> None:
    """A weakly connected receiver that is garbage collected: blocks stop reporting."""
    heard: list[str | None] = []

    class Listener:
        def on_exit(self, sender: object, route: Any, **kwargs: Any) -> None:
            heard.append(route.alias)

    gc.collect()  # the receivers of earlier tests: collected now, not with this one
    with in_database("other"):
        pass  # their collection noted, and the switch set again
    listener = Listener()
    signals.block_exited.connect(listener.on_exit)  # weak, Django's default
    with in_database("other"):
        pass
    del listener
    gc.collect()
    with in_database("other"):  # its entry finds the receiver gone
        pass
    assert heard == ["other"]
    assert not _switches.listening
    block = in_database("other")
    with block:
        pass
    assert not block._setup  # the usual entry again
    assert not block._leaving  # and the usual exit


# Replicas (committing: inside a test case's transaction, reads go to the primary)

REPLICA_TEST = pytest.mark.django_db(
    databases=["default", "other", "replica1", "replica2"], transaction=True
)


@REPLICA_TEST
def test_a_replica_marked_down_and_restored_is_reported(
    recorder: Recorder, clock: list[float], broken: Any
) -> None:
    """Down: the alias, seconds and error class (no message: it may hold a password)."""
    break_, repair, _ = broken
    break_("replica1")
    block = in_database(
        policy=PrimaryReplica("default", ["replica1"], choose=lambda up: up[0], down_seconds=10)
    )
    with block:
        Item.objects.exists()
    repair("replica1")
    clock[0] += 10
    with block:
        Item.objects.exists()
    [(_, down)] = recorder.of("replica_marked_down")
    assert down["sender"] is PrimaryReplica
    assert (down["alias"], down["seconds"], down["error"]) == ("replica1", 10, "OperationalError")
    [(_, up)] = recorder.of("replica_restored")
    assert (up["sender"], up["alias"]) == (PrimaryReplica, "replica1")
    assert "s3cret" not in repr(recorder.events)


@REPLICA_TEST
def test_a_write_pins_reads_once_per_block(recorder: Recorder) -> None:
    """The first write to the primary in a block reports the pin; later writes do not."""
    block = in_database(policy=PrimaryReplica("default", ["replica1", "replica2"]))
    with block:
        Item.objects.exists()
        assert not recorder.of("reads_pinned")
        Item.objects.create(name="one")
        Item.objects.create(name="two")
    with block:
        Item.objects.create(name="three")
    pins = [
        (sent["sender"], sent["primary"], sent["reason"]) for _, sent in recorder.of("reads_pinned")
    ]
    assert pins == [(PrimaryReplica, "default", "write")] * 2


@REPLICA_TEST
def test_a_write_without_pinning_reports_no_pin(recorder: Recorder) -> None:
    """pin_after_write=False: reads stay on the replica, and no pin is reported."""
    policy = PrimaryReplica("default", ["replica1"], pin_after_write=False)
    with in_database(policy=policy):
        Item.objects.create(name="one")
        assert Item.objects.all().db == "replica1"
    assert not recorder.of("reads_pinned")
    pinning = in_database(policy=PrimaryReplica("default", ["replica1", "replica2"]))
    with pinning, in_database(policy=policy):  # the enclosing block pins, once left to
        Item.objects.create(name="two")
    assert [sent["reason"] for _, sent in recorder.of("reads_pinned")] == ["write"]


# Paths other than a block entered and left in order


@pytest.mark.parametrize(
    ("target", "error"),
    [
        pytest.param("missing", UnknownDatabaseError, id="an alias not in settings"),
        pytest.param(
            {"ENGINE": "django.db.backends.sqlite3", "NAME": "/nonexistent/dir/x.db"},
            DatabaseConnectionError,
            id="a configuration that cannot connect",
        ),
    ],
)
def test_an_entry_that_fails_reports_no_block(
    recorder: Recorder, target: Any, error: type[Exception]
) -> None:
    """A block whose entry raises was never entered: neither signal, and no timing left."""
    with pytest.raises(error):
        in_database(target).__enter__()
    assert recorder.blocks() == []
    assert observe.get_timing() is None


def test_a_block_refused_by_a_route_lock_reports_no_block(recorder: Recorder) -> None:
    """Inside a locked request, the refused block is not reported; the lock's own block is."""
    with in_database("other"):
        tenants.lock("other")
        try:
            with pytest.raises(RouteLockedError):
                in_database("default").__enter__()
        finally:
            tenants.release()
    assert recorder.blocks() == [("entered", "other", 1), ("exited", "other", 1)]


def test_an_async_block_left_by_an_exception_reports_its_exit(recorder: Recorder) -> None:
    """``async with`` left by an exception: the exit is reported, with its depth."""

    async def fail() -> None:
        async with in_database("other"), in_database("default"):
            raise LookupError

    with pytest.raises(LookupError):
        asyncio.run(fail())
    assert recorder.blocks() == [
        ("entered", "other", 1),
        ("entered", "default", 2),
        ("exited", "default", 2),
        ("exited", "other", 1),
    ]


def test_an_async_block_on_a_configuration_reports_it_registered_and_closed(
    recorder: Recorder, tmp_path: Path
) -> None:
    """``async with`` registers and closes in the async ORM's thread: both are reported."""
    settings = secret_settings(tmp_path / "async.db")

    async def use() -> str:
        async with in_database(settings) as route:
            return route.alias

    alias = asyncio.run(use())
    assert [name for name, _ in recorder.events] == [
        "configuration_registered",
        "block_entered",
        "block_exited",
        "configuration_closed",
    ]
    assert recorder.events[0][1]["alias"] == recorder.events[-1][1]["alias"] == alias
    assert recorder.events[-1][1]["reason"] == "last block"
    assert_no_password(recorder)
