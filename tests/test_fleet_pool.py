"""The scheduler of work across databases: bounded overall, per server, and stoppable."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from dynroute.exceptions import ConfigurationError
from dynroute.fleet import Outcome, Threads, _migrations, _pool, schedule
from dynroute.management.commands.dynroute import _takes_database

if TYPE_CHECKING:
    from collections.abc import Callable


class Recorder:
    """Work that takes a moment and notes how many run at once, in all and per server."""

    def __init__(self, servers: dict[str, str], seconds: float = 0.02) -> None:
        self.servers = servers
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_in_all = 0

    def __call__(self, name: str) -> Outcome:
        server = self.servers[name]
        with self.lock:
            self.now[server] += 1
            self.most[server] = max(self.most[server], self.now[server])
            self.most_in_all = max(self.most_in_all, sum(self.now.values()))
        time.sleep(self.seconds)
        with self.lock:
            self.now[server] -= 1
        return Outcome(name, "done")


def run(
    servers: dict[str, str], *, parallel: int, per_server: int | None = None, **kwargs: object
) -> tuple[list[Outcome], Recorder]:
    """Schedule a :class:`Recorder` over ``servers``' names; the outcomes and the record."""
    recorder = Recorder(servers)
    with Threads(recorder, parallel) as threads:
        outcomes = schedule(
            list(servers), servers, threads, parallel=parallel, per_server=per_server, **kwargs
        )
    return outcomes, recorder


def test_a_server_gets_its_share_while_another_has_work() -> None:
    """Two servers, parallel 4: never more than 2 at once on either while both have work."""
    servers = {f"a{n}": "a" for n in range(12)} | {f"b{n}": "b" for n in range(12)}
    outcomes, recorder = run(servers, parallel=4)
    assert [o.name for o in outcomes] == list(servers)
    assert {o.status for o in outcomes} == {"done"}
    assert recorder.most == {"a": 2, "b": 2}
    assert recorder.most_in_all == 4


def test_the_last_server_with_work_may_use_every_slot() -> None:
    """Once a server is done, the other takes all of ``parallel``."""
    servers = {"a0": "a"} | {f"b{n}": "b" for n in range(12)}
    _, recorder = run(servers, parallel=4)
    assert recorder.most["b"] == 4


def test_per_server_caps_each_server() -> None:
    """``per_server=1``: one at a time on each server, whatever ``parallel`` allows."""
    servers = {f"a{n}": "a" for n in range(6)} | {f"b{n}": "b" for n in range(6)}
    _, recorder = run(servers, parallel=8, per_server=1)
    assert recorder.most == {"a": 1, "b": 1}


def test_a_stop_starts_nothing_more_and_reports_the_rest_as_not_run() -> None:
    """Set after the first outcome: the running ones end, the waiting ones are "not run"."""
    stop = threading.Event()
    servers = {f"a{n}": "a" for n in range(10)}
    finished: list[str] = []

    def note(outcome: Outcome) -> None:
        finished.append(outcome.name)
        stop.set()

    outcomes, _ = run(servers, parallel=2, stop=stop, finished=note)
    statuses = Counter(o.status for o in outcomes)
    assert statuses["done"] == len(finished) == 2
    assert statuses["not run"] == 8


def test_work_that_raises_is_that_databases_failure() -> None:
    """An exception in the work: that name fails with the error, the others are done."""

    def work(name: str) -> Outcome:
        if name == "a1":
            msg = "boom"
            raise ValueError(msg)
        return Outcome(name, "done")

    servers: dict[str, str] = {"a0": "a", "a1": "a", "a2": "a"}
    runner: Callable[[str], Outcome] = work
    with Threads(runner, 2) as threads:
        outcomes = schedule(list(servers), servers, threads, parallel=2)
    assert [(o.name, o.status, o.error) for o in outcomes] == [
        ("a0", "done", ""),
        ("a1", "failed", "ValueError: boom"),
        ("a2", "done", ""),
    ]


def test_a_worker_ignores_ctrl_c_and_takes_the_parents_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker process's set-up: SIGINT ignored (the parent decides), the settings module set."""
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    previous = signal.getsignal(signal.SIGINT)
    try:
        _pool._set_up_worker("tests.settings")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "tests.settings"


def test_run_gives_the_block_s_database_to_commands_that_take_one() -> None:
    """``dynroute run``: a command with --database is given the block's; others are not."""
    assert _takes_database("showmigrations")
    assert _takes_database("dumpdata")
    assert not _takes_database("clearsessions")
    assert not _takes_database("no-such-command")


def test_conflicting_migrations_are_refused_naming_each_app_and_its_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app with two leaf migrations: nothing runs; the message names them and the fix."""
    graph = _migrations.graph()
    conflicted = dataclasses.replace(graph, conflicts={"shop": ["0002_a", "0002_b"]})
    monkeypatch.setattr(_migrations, "_graph", conflicted)
    with pytest.raises(ConfigurationError) as raised:
        _migrations.check_conflicts()
    assert str(raised.value) == (
        "Conflicting migrations detected: 0002_a, 0002_b in shop. Run 'manage.py "
        "makemigrations --merge' to merge them; no database was migrated."
    )
    monkeypatch.setattr(_migrations, "_graph", graph)
    _migrations.check_conflicts()  # the project's own graph has none
