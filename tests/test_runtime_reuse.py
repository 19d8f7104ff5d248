"""Connection reuse for runtime configurations: opt in with Django's CONN_MAX_AGE."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.backends.base import base

import dynroute
from dynroute import close_idle_connections, in_database
from dynroute.exceptions import ConfigurationError
from dynroute.runtime import _registry, active_aliases
from tests.runtime import FailingClose, names, sessions
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


@pytest.fixture
def reusing(runtime):
    """The runtime database's settings with persistent connections (CONN_MAX_AGE=60)."""
    return {**runtime, "CONN_MAX_AGE": 60}


def raw_connection(alias):
    """The DB-API connection this thread's wrapper holds for ``alias``."""
    return connections[alias].connection


def test_sequential_blocks_reuse_one_connection(reusing):
    """With CONN_MAX_AGE, the next block on the same configuration reuses the connection."""
    seen = []
    for _ in range(5):
        with in_database(reusing) as route:
            Item.objects.count()
            seen.append(raw_connection(route.alias))
    assert all(connection is seen[0] for connection in seen)
    assert sessions(reusing, expected=1) == 1
    assert active_aliases() == {route.alias}  # kept registered, idle


def test_a_block_entered_inside_a_transaction_on_the_kept_connection_keeps_it(reusing):
    """The kept connection is not checked (and closed) while a transaction is open on it.

    An enclosing block's transaction, or a test case's, survives the inner block.
    """
    with in_database(reusing, write=True) as route, transaction.atomic(using=route.alias):
        Item.objects.create(name="before the inner block")
        kept = raw_connection(route.alias)
        with in_database(dict(reusing), write=True):
            assert Item.objects.count() == 1
            Item.objects.create(name="in the inner block")
        assert raw_connection(route.alias) is kept
    assert names(reusing) == ["before the inner block", "in the inner block"]


def test_a_nested_block_keeps_the_connection_its_enclosing_block_uses_however_old(
    runtime, monkeypatch
):
    """Past CONN_MAX_AGE, a block inside another on the same configuration reconnects nothing.

    The enclosing block's session (a temporary table, a search_path, a server-side
    cursor) lives on that connection; only a connection kept idle is replaced.
    """
    short = {**runtime, "CONN_MAX_AGE": 1}
    with in_database(short) as route:
        first = raw_connection(route.alias)

        class TwoSecondsLater:
            """The clock Django's connections read, moved past CONN_MAX_AGE."""

            @staticmethod
            def monotonic() -> float:
                return time.monotonic() + 2

        monkeypatch.setattr(base, "time", TwoSecondsLater)
        with in_database(dict(short)):
            assert raw_connection(route.alias) is first
        assert raw_connection(route.alias) is first


def test_the_connection_of_a_thread_that_ended_is_closed_not_kept(reusing):
    """A thread per request (Django under ASGI): an ended thread's connection is not kept.

    It can never be used again (connections are per thread): it is closed when the
    configuration next goes idle, instead of holding a server connection and a share
    of the idle bound.
    """

    def request() -> None:
        with in_database(reusing):
            Item.objects.count()

    for _ in range(5):
        thread = threading.Thread(target=request)
        thread.start()
        thread.join()
    assert sessions(reusing, expected=1) == 1  # the last thread's, until the next exit
    assert close_idle_connections() == 1


def test_an_ended_threads_connection_is_closed_by_the_next_one_not_left_to_the_collector(
    reusing, caplog
):
    """While blocks keep a configuration active from thread to thread, it never goes idle.

    The connection of a thread that has ended is closed when the next thread connects,
    and until then held, not left for the garbage collector to find open (a
    ResourceWarning, and a server session for as long as it takes to run).
    """

    def request() -> None:
        with in_database(reusing):
            Item.objects.count()

    gc.collect()
    gc.disable()  # nothing collected behind the test's back
    try:
        with caplog.at_level(logging.WARNING, logger="dynroute"), in_database(reusing):
            for _ in range(3):
                thread = threading.Thread(target=request)
                thread.start()
                thread.join()
            # Ours and the last thread's: the two before were closed as the next connected.
            assert sessions(reusing, expected=2) == 2
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gc.collect()
            assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
            assert sessions(reusing, expected=2) == 2
    finally:
        gc.enable()
    assert sessions(reusing, expected=1) == 1  # the ended thread's, closed on the way out
    assert close_idle_connections() == 1
    assert caplog.records == []  # closing them is routine, not a stray connection


def test_an_ended_threads_connection_that_fails_to_close_is_named_in_a_warning(reusing, caplog):
    """A close that fails is logged with the alias, and the next thread connects all the same."""
    raws = []

    def request() -> None:
        with in_database(reusing) as route:
            Item.objects.count()
        wrapper = connections[route.alias]
        raws.append(wrapper.connection)
        wrapper.connection = FailingClose(wrapper.connection)

    first = threading.Thread(target=request)
    first.start()
    first.join()
    try:
        with caplog.at_level(logging.WARNING, logger="dynroute"), in_database(reusing) as route:
            assert Item.objects.count() == 0
        assert [record.getMessage() for record in caplog.records] == [
            f"closing runtime database {route.alias!r} failed: OSError"
        ]
    finally:
        raws[0].close()
        close_idle_connections()


def test_close_idle_connections_closes_and_unregisters(reusing):
    """close_idle_connections() closes what reuse kept and withdraws the alias."""
    before = dict(connections.databases)
    with in_database(reusing) as route:
        Item.objects.count()
    assert route.alias in connections.databases
    assert close_idle_connections() == 1
    assert sessions(reusing, expected=0) == 0
    assert connections.databases == before
    assert not hasattr(connections._connections, route.alias)  # no wrapper left behind
    assert close_idle_connections() == 0


def test_idle_connections_in_other_threads_are_closed_too(reusing):
    """Workers' idle connections are closed by a call from another thread, with its own.

    The workers stay alive meanwhile, as a pool's threads wait for work: a thread
    that has ended drops its connections with its thread-local storage, whenever the
    garbage collector gets to them.
    """
    idle = threading.Barrier(4)
    stop = threading.Event()

    def worker():
        with in_database(reusing):
            Item.objects.count()
        idle.wait(timeout=30)
        stop.wait(timeout=30)

    with in_database(reusing):  # this thread's, the first one registered
        Item.objects.count()
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        idle.wait(timeout=30)
        assert sessions(reusing, expected=4) == 4
        assert close_idle_connections() == 4
        assert sessions(reusing, expected=0) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_lowering_the_bound_closes_as_many_as_needed_least_recent_first(
    reusing, settings, fresh_alias, caplog
):
    """Three idle, then a bound of 1: the next exit closes the three oldest, and logs each."""
    aliases = [fresh_alias("lower") for _ in range(4)]
    for alias in aliases[:3]:
        with in_database(reusing, alias=alias):
            Item.objects.count()
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 1
    with caplog.at_level(logging.DEBUG, logger="dynroute"), in_database(reusing, alias=aliases[3]):
        Item.objects.count()
    assert active_aliases() == {aliases[3]}
    assert sessions(reusing, expected=1) == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"closed idle runtime database {alias!r} (bound 1)" for alias in aliases[:3]
    ]


def test_a_bound_of_zero_keeps_nothing(reusing, settings):
    """DYNROUTE_MAX_IDLE_CONNECTIONS = 0 is allowed: every connection closes at the last exit."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 0
    with in_database(reusing):
        Item.objects.count()
    assert not active_aliases()
    assert sessions(reusing, expected=0) == 0


def test_the_number_of_idle_connections_is_bounded(reusing, settings, fresh_alias):
    """Beyond DYNROUTE_MAX_IDLE_CONNECTIONS, the least recently used is closed."""
    first, second = fresh_alias("reuse_first"), fresh_alias("reuse_second")
    with in_database(reusing, alias=first):  # kept, under the default bound
        Item.objects.count()
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 1  # read again once changed
    with in_database(reusing, alias=second):
        Item.objects.count()
    assert active_aliases() == {second}
    assert first not in connections.databases
    assert sessions(reusing, expected=1) == 1


@pytest.mark.parametrize("bound", ["16", -1, True, 2.5, None])
def test_a_bad_idle_bound_is_refused_at_registration(reusing, settings, bound):
    """A bound that is not a whole number, 0 or more: ConfigurationError, nothing kept."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = bound
    before = dict(connections.databases)
    with (
        pytest.raises(ConfigurationError, match="DYNROUTE_MAX_IDLE_CONNECTIONS must be a whole"),
        in_database(reusing),
    ):
        pytest.fail("the body must not run")
    assert connections.databases == before
    assert not active_aliases()


def test_an_obsolete_connection_is_replaced_on_entry(runtime, monkeypatch):
    """Django's own rule: past CONN_MAX_AGE, the next block connects afresh."""
    short = {**runtime, "CONN_MAX_AGE": 1}
    with in_database(short) as route:
        first = raw_connection(route.alias)
    with in_database(short):
        assert raw_connection(route.alias) is first  # still young: kept

    class TwoSecondsLater:
        """The clock Django's connections read, moved past CONN_MAX_AGE."""

        @staticmethod
        def monotonic() -> float:
            return time.monotonic() + 2

    monkeypatch.setattr(base, "time", TwoSecondsLater)
    with in_database(short):
        second = raw_connection(route.alias)
    assert second is not first
    assert sessions(runtime, expected=1) == 1  # the obsolete one was closed


def test_the_default_idle_bound_is_128_connections():
    """Without DYNROUTE_MAX_IDLE_CONNECTIONS, 128 idle connections are kept.

    A worker of a few threads serving tens of tenants keeps every connection it reuses
    (4 threads x 32 tenants); the bound's LRU order is tested with a small bound below.
    """
    assert not hasattr(settings, "DYNROUTE_MAX_IDLE_CONNECTIONS")
    assert _registry._max_idle_connections() == 128


def test_over_the_bound_the_least_recently_used_configuration_goes(reusing, fresh_alias, settings):
    """Past the bound, the configuration left longest ago is closed and unregistered."""
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 3
    aliases = [fresh_alias("idle") for _ in range(4)]
    for alias in aliases[:3]:
        with in_database(reusing, alias=alias):
            Item.objects.count()
    with in_database(reusing, alias=aliases[0]):  # now the most recently used
        Item.objects.count()
    assert active_aliases() == set(aliases[:3])
    with in_database(reusing, alias=aliases[3]):
        Item.objects.count()
    assert active_aliases() == {aliases[0], *aliases[2:]}
    assert sessions(reusing, expected=3) == 3
    assert close_idle_connections() == 3


def test_async_blocks_reuse_the_async_orms_connection(reusing):
    """Async blocks reuse the connection in the async ORM's thread."""

    async def main() -> list[int]:
        counts = []
        for _ in range(3):
            async with in_database(reusing):
                counts.append(await Item.objects.acount())
        return counts

    assert asyncio.run(main()) == [0, 0, 0]
    assert sessions(reusing, expected=1) == 1
    assert close_idle_connections() == 1
    assert sessions(reusing, expected=0) == 0


def test_without_conn_max_age_nothing_is_kept(runtime):
    """CONN_MAX_AGE=0 (the default) tears everything down at the last exit."""
    with in_database(runtime):
        Item.objects.count()
    assert not active_aliases()
    assert sessions(runtime, expected=0) == 0


def _lines_run_by_dynroute(action) -> int:
    """How many lines of dynroute's own code ``action()`` runs (in this thread)."""
    source = str(Path(dynroute.__file__).parent)
    lines = 0

    def trace(frame, event, _arg):
        nonlocal lines
        if not frame.f_code.co_filename.startswith(source):
            return None
        if event == "line":
            lines += 1
        return trace

    previous = sys.gettrace()  # coverage's, under nox
    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(previous)
    return lines


def test_an_exit_costs_the_same_whatever_the_number_of_idle_configurations(
    reusing, settings, fresh_alias
):
    """A re-entry runs the same dynroute code at 3 idle configurations and at 20.

    Nothing per block is scanned that grows with the number of tenants.
    """
    settings.DYNROUTE_MAX_IDLE_CONNECTIONS = 1000
    kept = fresh_alias("kept")
    block = in_database(reusing, alias=kept)

    def reenter() -> None:
        with block:
            pass

    costs = []
    try:
        for count in (3, 20):
            while len(active_aliases()) < count:
                with in_database(reusing, alias=fresh_alias("idle")):
                    Item.objects.count()
            reenter()  # the block's connection is kept; the next entry reuses it
            costs.append(_lines_run_by_dynroute(reenter))
    finally:
        close_idle_connections()
    assert costs[0] == costs[1], costs
