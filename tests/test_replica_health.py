"""Replica health: a replica that fails to connect is skipped for a while, per process.

A replica whose connection fails to open is marked down for its policy's
``down_seconds`` and skipped, with a WARNING; once that time is over, one read (not
every one at once) tries it again. The ``clock`` fixture replaces the clock health
reads, and ``broken`` makes a replica's connection fail to open (tests/conftest.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.db import OperationalError

import dynroute
from dynroute import PrimaryReplica, in_database
from dynroute.replicas import _health, down_replicas
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
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "'replica1' is down (OperationalError on connect)" in record.getMessage()
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
    assert "'replica1' is back up" in caplog.text
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
