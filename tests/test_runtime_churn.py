"""Connection churn: a WARNING when the idle bound closes connections the worker still uses.

A worker whose tenants outnumber the bound reconnects on almost every request, with no
error anywhere: the ``dynroute`` logger says so, once in five minutes, naming the
setting and a value that would stop it. Evicting tenants not seen for a while, or seen
once (a loop over every tenant), is the bound's job, and stays silent.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import pytest

from dynroute import close_idle_connections, in_database
from dynroute.runtime import _churn, _registry
from tests.testapp.models import Item

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [
    pytest.mark.django_db(databases=["default"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The churn watch's clock; ``clock[0] += s`` moves it on."""
    now = [1000.0]
    monkeypatch.setattr(_churn.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture(autouse=True)
def _watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A churn watch of its own for each test: no window or warning carried over."""
    monkeypatch.setattr(_registry, "_CHURN", _churn.ChurnWatch())


@pytest.fixture
def tenants(runtime: dict[str, object]) -> list[dict]:
    """Six tenants on the runtime database, each a configuration of its own, reused."""
    return [{**runtime, "CONN_MAX_AGE": 60} for _ in range(6)]


def serve(
    tenants: list[dict], aliases: list[str], rounds: int, clock: list[float], step: float
) -> None:
    """Requests for each tenant in turn, ``rounds`` times, ``step`` seconds apart."""
    for _ in range(rounds):
        for settings, alias in zip(tenants, aliases, strict=True):
            with in_database(settings, alias=alias):
                Item.objects.count()
            clock[0] += step


def churn_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs of the dynroute logger."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "dynroute" and record.levelno == logging.WARNING
    ]


@pytest.fixture
def aliases(fresh_alias: Callable[[str], str]) -> list[str]:
    """An alias per tenant, never used by another test."""
    return [fresh_alias("tenant") for _ in range(6)]


def test_a_bound_below_the_tenants_served_is_warned_naming_the_setting_and_a_value(
    tenants, aliases, clock, settings, caplog
):
    """Six tenants served in turn, two kept: every request reconnects, and the log says so."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        serve(tenants, aliases, rounds=5, clock=clock, step=0.1)
    (message,) = churn_warnings(caplog)
    assert message.startswith(
        "DYNROUTE_MAX_IDLE_CONNECTIONS (2) is below the connections this worker reuses: "
        "20 of the last 23 runtime configurations evicted were needed again within 60 s"
    )
    suggested = int(re.search(r"Set DYNROUTE_MAX_IDLE_CONNECTIONS to (\d+) or more", message)[1])
    assert suggested == 6  # one connection for each tenant: all of them kept
    close_idle_connections()


def test_the_value_suggested_stops_the_churn(tenants, aliases, clock, settings, caplog):
    """At the bound the warning names, the same requests evict nothing."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 6
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        serve(tenants, aliases, rounds=5, clock=clock, step=0.1)
    assert churn_warnings(caplog) == []
    assert close_idle_connections() == 6


def test_tenants_not_seen_for_a_while_are_evicted_silently(
    tenants, aliases, clock, settings, caplog
):
    """Evicting configurations needed again only minutes later is the bound's job."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for _ in range(5):
            serve(tenants, aliases, rounds=1, clock=clock, step=0.1)
            clock[0] += 61  # each tenant's next request comes over a minute later
    assert churn_warnings(caplog) == []
    close_idle_connections()


def test_a_loop_over_tenants_each_used_once_is_not_churn(
    runtime, fresh_alias, clock, settings, caplog
):
    """Forty tenants, each used once (a command over every tenant): evicted, never missed."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for _ in range(40):
            with in_database({**runtime, "CONN_MAX_AGE": 60}, alias=fresh_alias("once")):
                Item.objects.count()
            clock[0] += 0.1
    assert churn_warnings(caplog) == []
    close_idle_connections()


def test_the_warning_comes_at_most_once_in_five_minutes(tenants, aliases, clock, settings, caplog):
    """Churn that goes on is warned again only after five minutes."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        serve(tenants, aliases, rounds=10, clock=clock, step=0.1)
        assert len(churn_warnings(caplog)) == 1
        clock[0] += 300
        serve(tenants, aliases, rounds=5, clock=clock, step=0.1)
    assert len(churn_warnings(caplog)) == 2
    close_idle_connections()


def test_fewer_comebacks_than_a_verdict_needs_are_not_warned(
    tenants, aliases, clock, settings, caplog
):
    """A few tenants coming back after their eviction (under 20 in a minute) are not churn yet."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 4
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        serve(tenants, aliases, rounds=4, clock=clock, step=0.1)  # 18 come back
    assert churn_warnings(caplog) == []
    close_idle_connections()


def test_at_the_default_bound_tens_of_tenants_are_all_kept(tenants, aliases, clock, caplog):
    """The default bound keeps the six tenants (and far more): nothing evicted, nothing said."""
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        serve(tenants, aliases, rounds=5, clock=clock, step=0.1)
    assert churn_warnings(caplog) == []
    assert close_idle_connections() == 6


def test_the_window_starts_again_after_a_minute(tenants, aliases, clock, settings, caplog):
    """Comebacks spread over more than a minute are judged per minute, not summed."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for _ in range(4):  # 4 x 12 comebacks, a window each: 20 in none
            serve(tenants, aliases, rounds=3, clock=clock, step=10.0)
    assert churn_warnings(caplog) == []
    close_idle_connections()


def test_tenants_back_after_more_than_a_minute_are_not_churn_however_many(
    runtime, fresh_alias, clock, settings, caplog
):
    """Thirty tenants evicted, then all back 61 s later: reconnects the bound was right about."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    thirty = [(fresh_alias("back"), {**runtime, "CONN_MAX_AGE": 60}) for _ in range(30)]
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for _ in range(2):
            for alias, settings_dict in thirty:
                with in_database(settings_dict, alias=alias):
                    Item.objects.count()
                clock[0] += 0.01
            clock[0] += 61
    assert churn_warnings(caplog) == []
    close_idle_connections()


def test_comebacks_that_are_not_most_of_the_evictions_are_not_churn(
    runtime, fresh_alias, clock, settings, caplog
):
    """A few tenants come back among many seen once: over 20 comebacks, a third of the evictions."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 2
    cycling = [(fresh_alias("cycling"), {**runtime, "CONN_MAX_AGE": 60}) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        for step in range(90):  # 27 comebacks, 87 evictions
            once = (fresh_alias("once"), {**runtime, "CONN_MAX_AGE": 60})
            alias, settings_dict = cycling[step // 3 % 3] if step % 3 == 0 else once
            with in_database(settings_dict, alias=alias):
                Item.objects.count()
            clock[0] += 0.1
    assert churn_warnings(caplog) == []
    close_idle_connections()


# The watch itself: how many evictions it remembers, and where a window ends.


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch, clock: list[float]) -> _churn.ChurnWatch:
    """A watch that remembers 3 evictions and judges from the first comeback."""
    monkeypatch.setattr(_churn, "_REMEMBERED", 3)
    monkeypatch.setattr(_churn, "MIN_EVICTIONS", 1)
    return _churn.ChurnWatch()


def comebacks(watch: _churn.ChurnWatch, *aliases: str) -> list[object]:
    """Register ``aliases`` in turn: each warning's count of comebacks, or None for none."""
    verdicts = [watch.registered(alias, 2, dict) for alias in aliases]
    return [None if verdict is None else verdict[2] for verdict in verdicts]


def test_the_watch_remembers_as_many_evictions_as_it_may(watch):
    """Three evicted with room for three: the first two back are most of them, warned."""
    for alias in ("a", "b", "c"):
        watch.evicted(alias, 1)
    assert comebacks(watch, "a", "b") == [None, 2]


def test_the_watch_forgets_its_oldest_eviction_past_what_it_may_remember(watch):
    """A fourth eviction forgets the first: its comeback is not counted, the others are."""
    for alias in ("a", "b", "c", "d"):
        watch.evicted(alias, 1)
    assert comebacks(watch, "a", "b", "c", "d") == [None, None, None, 3]


def test_a_window_lasts_sixty_seconds_to_the_end(watch, clock):
    """An eviction 60 s into a window is in it: one comeback of two evictions is not most."""
    watch.evicted("a", 1)
    clock[0] += _churn.WINDOW_SECONDS
    watch.evicted("b", 1)
    assert comebacks(watch, "b") == [None]
    clock[0] += 0.001  # past it: a new window, where b's comeback would be the only one
    watch.evicted("c", 1)
    assert comebacks(watch, "c") == [1]


def test_a_configuration_back_sixty_seconds_after_its_eviction_did_not_come_back_soon(watch, clock):
    """Registered again 60 s after its eviction, or later: the bound was right to close it."""
    watch.evicted("a", 1)
    watch.evicted("b", 1)
    clock[0] += _churn.RECENT_SECONDS
    assert comebacks(watch, "a", "b") == [None, None]


def test_a_second_warning_may_come_five_minutes_after_the_first(watch, clock):
    """The quiet time is five minutes to the second: then churn is said again."""
    watch.evicted("a", 1)
    assert comebacks(watch, "a") == [1]
    clock[0] += _churn.QUIET_SECONDS - 1
    watch.evicted("b", 1)
    assert comebacks(watch, "b") == [None]  # still quiet
    clock[0] += 1
    watch.evicted("c", 1)
    assert comebacks(watch, "c") == [2]  # b and c, in the window b's eviction began
