"""Replica health: a replica that fails to connect is skipped for a while, per process.

A replica whose connection fails to open is marked down for its policy's
``down_seconds`` and skipped, with a WARNING; once that time is over, one read (not
every one at once) tries it again. The ``clock`` fixture replaces the clock health
reads, and ``broken`` makes a replica's connection fail to open (tests/conftest.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from django.db import OperationalError, connections

import dynroute
from dynroute import PrimaryReplica, in_database
from dynroute.replicas import _health, _positions, down_replicas, mark_up
from dynroute.signals import replica_marked_down
from tests.testapp.models import Item

REPLICAS = ("replica1", "replica2")

pytestmark = pytest.mark.django_db(databases=["default", *REPLICAS], transaction=True)


def replicas(**options: Any) -> PrimaryReplica:
    """A PrimaryReplica on default and the two test replicas."""
    return PrimaryReplica("default", REPLICAS, **options)


def read_alias() -> str:
    """Where a read of Item goes here, now."""
    return Item.objects.all().db


def visible(name: str) -> bool:
    """Whether a read here finds the Item called ``name``."""
    return Item.objects.filter(name=name).exists()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages dynroute logged at WARNING."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "dynroute" and record.levelno == logging.WARNING
    ]


def test_a_replica_that_fails_to_connect_is_skipped_and_the_read_succeeds(
    clock: list[float], broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that cannot connect is marked down and logged; the read succeeds elsewhere."""
    break_, _, attempts = broken
    break_("replica1")
    Item.objects.using("replica2").create(name="on-replica2")
    block = in_database(policy=replicas(choose=lambda up: up[0]))
    with caplog.at_level(logging.WARNING, logger="dynroute"), block:
        assert visible("on-replica2")  # replica1 chosen, failed, replica2 answered
        assert read_alias() == "replica2"
    assert attempts["replica1"] == 1
    assert down_replicas() == {"replica1": 30.0}
    assert warnings(caplog) == [
        "dynroute: replica 'replica1' is down (OperationalError on connect): skipping it for 30 s"
    ]
    assert "s3cret" not in caplog.text


def test_a_down_replica_costs_one_attempt_per_down_seconds_then_comes_back(
    clock: list[float], broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A down replica is tried once per down_seconds, and used again once it connects."""
    break_, repair, attempts = broken
    break_("replica1")
    block = in_database(policy=replicas(choose=lambda up: up[0], down_seconds=10))
    for _ in range(5):
        with block:
            assert read_alias() == "replica2"
    assert attempts["replica1"] == 1
    clock[0] += 10  # due again: one read tries it, fails, marks it down again
    for _ in range(3):
        with block:
            assert read_alias() == "replica2"
    assert attempts["replica1"] == 2
    repair("replica1")
    clock[0] += 9.9
    with block:
        assert read_alias() == "replica2"  # not yet due
    clock[0] += 0.1
    with caplog.at_level(logging.WARNING, logger="dynroute"), block:
        assert read_alias() == "replica1"
    assert warnings(caplog)[-1] == "dynroute: replica 'replica1' is back up: reads go to it again"
    assert down_replicas() == {}


def test_when_every_replica_is_down_reads_go_to_the_primary(
    clock: list[float], broken: Any
) -> None:
    """With every replica down, reads go to the primary and still succeed."""
    break_, _, _ = broken
    break_("replica1")
    break_("replica2")
    Item.objects.create(name="on-primary")
    block = in_database(policy=replicas())
    with block:
        assert visible("on-primary")
    with block:
        assert read_alias() == "default"
        assert dynroute.current_route() is not None


def test_a_retry_is_claimed_by_one_caller_only(clock: list[float]) -> None:
    """When a down replica is due, one caller tries it; the others keep skipping it."""
    _health._mark_down("replica1", 5, OperationalError("x"), PrimaryReplica)
    assert _health.is_down("replica1")
    clock[0] += 5
    assert not _health.is_down("replica1")
    assert _health.is_down("replica1")
    assert down_replicas() == {"replica1": 5.0}


def test_a_replica_due_for_its_retry_is_shown_with_no_time_left(clock: list[float]) -> None:
    """Past its wait and not yet tried again: still down, with 0 seconds to go, not fewer."""
    _health._mark_down("replica1", 5, OperationalError("x"), PrimaryReplica)
    clock[0] += 2
    assert down_replicas() == {"replica1": 3.0}
    clock[0] += 5
    assert down_replicas() == {"replica1": 0.0}


def test_a_failed_retry_says_the_replica_is_still_down(
    clock: list[float], broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The first failure says "skipping it"; a retry that fails says "still down", with its time."""
    break_, _, _ = broken
    break_("replica1")
    block = in_database(policy=replicas(choose=lambda up: up[0], down_seconds=2.5))
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        with block:
            assert read_alias() == "replica2"
        clock[0] += 2.5
        with block:
            assert read_alias() == "replica2"
    down = "dynroute: replica 'replica1' is down (OperationalError on connect)"
    assert warnings(caplog) == [
        f"{down}: skipping it for 2.5 s",
        f"{down}: still down, skipping it again for 2.5 s",
    ]


@pytest.mark.parametrize("seconds", [0, 0.5])
def test_down_seconds_may_be_zero_or_a_fraction(
    clock: list[float], broken: Any, seconds: float
) -> None:
    """down_seconds=0 retries a failed replica on the next read; a fraction is a fraction."""
    break_, _, attempts = broken
    break_("replica1")
    block = in_database(policy=replicas(choose=lambda up: up[0], down_seconds=seconds))
    with block:
        assert read_alias() == "replica2"
    clock[0] += seconds
    with block:
        assert read_alias() == "replica2"
    assert attempts["replica1"] == 2


def test_a_retry_due_for_two_callers_at_once_is_made_by_one(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers find the retry due at once: the first to claim it tries; the other skips.

    The second caller runs while the first reads the clock, between its look at the
    mark and its claim: as a thread would, but always in that order.
    """
    _health._mark_down("replica1", 5, OperationalError("x"), PrimaryReplica)
    clock[0] += 5
    answers: list[bool] = []
    now = _health.time.monotonic

    def meanwhile() -> float:
        monkeypatch.setattr(_health.time, "monotonic", now)
        answers.append(_health.is_down("replica1"))  # the other caller
        return now()

    monkeypatch.setattr(_health.time, "monotonic", meanwhile)
    answers.append(_health.is_down("replica1"))
    assert answers == [False, True]  # the other caller tries it; the first skips it
    assert down_replicas() == {"replica1": 5.0}


def test_a_block_leaves_its_replica_once_another_thread_finds_it_down(
    clock: list[float], broken: Any
) -> None:
    """Health is per process: a replica down for one thread is left by a block reading it."""
    break_, _, _ = broken
    policy = replicas(choose=lambda up: up[0])
    seen: list[str] = []

    def other_thread() -> None:
        try:
            break_("replica1")  # this thread's connection to it fails to open
            with in_database(policy=policy):
                seen.append(read_alias())
        finally:
            connections.close_all()

    with in_database(policy=policy):
        assert read_alias() == "replica1"  # connected here
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert seen == ["replica2"]
        assert read_alias() == "replica2"  # this thread's connection is open, but it is down


def test_mark_up_forgets_one_replica_or_every_one(clock: list[float], broken: Any) -> None:
    """mark_up(alias) forgets that a replica is down, at once (none: nothing); mark_up() all."""
    break_, repair, _ = broken
    break_("replica1")
    break_("replica2")
    block = in_database(policy=replicas(choose=lambda up: up[0]))
    with block:
        assert read_alias() == "default"
    assert down_replicas() == {"replica1": 30.0, "replica2": 30.0}
    repair("replica1")
    mark_up("replica1")
    mark_up("replica1")  # not down: nothing to forget
    assert down_replicas() == {"replica2": 30.0}
    with block:
        assert read_alias() == "replica1"
    mark_up()
    assert down_replicas() == {}


def test_a_replica_down_and_not_due_is_not_tried_when_the_chosen_one_fails(
    clock: list[float], broken: Any
) -> None:
    """The chosen replica fails; the other, down and not yet due, is skipped: the primary."""
    break_, _, attempts = broken
    break_("replica1")
    break_("replica2")
    block = in_database(policy=replicas(choose=lambda up: up[-1], down_seconds=10))
    with block:
        assert read_alias() == "default"  # replica2 chosen, failed; replica1 failed too
    assert attempts == {"replica1": 1, "replica2": 1}
    clock[0] += 5
    mark_up("replica2")  # replica2 up again by hand; replica1 still down for 5 s
    with block:
        assert read_alias() == "default"  # replica2 chosen, fails again; replica1 skipped
    assert attempts == {"replica1": 1, "replica2": 2}


def test_a_replica_that_fails_after_the_chosen_one_is_reported_by_the_policy_class(
    clock: list[float], broken: Any
) -> None:
    """Signals of the replicas tried after the chosen one name PrimaryReplica as sender."""
    break_, _, _ = broken
    break_("replica1")
    break_("replica2")
    senders: list[object] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        senders.append(sender)

    replica_marked_down.connect(receiver)
    try:
        with in_database(policy=replicas(choose=lambda up: up[-1])):
            assert read_alias() == "default"
    finally:
        replica_marked_down.disconnect(receiver)
    assert senders == [PrimaryReplica, PrimaryReplica]  # replica2 (chosen), then replica1


def test_a_replica_that_fails_while_its_position_is_checked_is_reported_by_the_policy_class(
    clock: list[float], broken: Any
) -> None:
    """Checking a needed position connects too: a failure there names PrimaryReplica."""
    break_, _, attempts = broken
    break_("replica1")
    senders: list[object] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        senders.append(sender)

    replica_marked_down.connect(receiver)
    try:
        needing = _positions.Needing({"default": _positions.Lsn(1, 1)})
        with needing, in_database(policy=replicas(choose=lambda up: up[0])):
            assert read_alias() == "default"  # replica1 down, replica2 without it
    finally:
        replica_marked_down.disconnect(receiver)
    assert attempts["replica1"] == 1
    assert senders == [PrimaryReplica]
