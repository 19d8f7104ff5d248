"""A bounded stress run: threads and asyncio tasks, aliases and runtime configurations.

Four threads and twenty asyncio tasks (on a fifth thread) enter random nests of blocks:
aliases, a runtime configuration torn down after each block, one kept for reuse, and
custom policies, with random flags. After every entry and exit each worker compares
the router's decisions with its own model of its stack, and now and then runs a real
query whose count tells which database served it. Every comparison is a routed
operation; every disagreement a misroute. At the end: no alias left registered, no
session left open on the server.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field

import pytest
from django.db import connections, router

from dynroute import close_idle_connections, in_database
from dynroute.runtime import active_aliases
from tests import figures
from tests.runtime import sessions
from tests.testapp.models import Author, Item

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"], transaction=True),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

THREADS, TASKS = 4, 20
ROWS = {"default": 3, "other": 5}


class AuthorsElsewhere:
    """A custom policy: reads of authors go to 'other', nothing else has an opinion."""

    def db_for_read(self, model, /, **hints):
        return "other" if model is Author else None

    def db_for_write(self, model, /, **hints):
        return None


@dataclass
class Tally:
    """Counts shared by all workers (updated under a lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    operations: int = 0
    queries: int = 0
    runtime_blocks: int = 0
    misroutes: list[str] = field(default_factory=list)

    def add(self, operations: int, queries: int, runtime_blocks: int, misroutes: list[str]) -> None:
        with self.lock:
            self.operations += operations
            self.queries += queries
            self.runtime_blocks += runtime_blocks
            self.misroutes.extend(misroutes)


class Worker:
    """One thread's or task's random program, checked against its own model."""

    def __init__(
        self, seed: int, targets: dict[str, object], rows: dict[str, int], budget: int
    ) -> None:
        self.rng = random.Random(seed)
        self.targets = targets
        self.rows = rows
        self.budget = budget
        self.stack: list[tuple[dict[type, str | None], dict[type, str | None]]] = []
        self.operations = self.queries = self.runtime_blocks = 0
        self.misroutes: list[str] = []

    def pick(self):
        """A random block and the model's view of it."""
        kind = self.rng.choices(
            ["default", "other", "policy", "runtime", "reuse"], weights=[40, 40, 10, 1, 9]
        )[0]
        if kind == "policy":
            return (
                in_database(policy=AuthorsElsewhere()),
                ({Item: None, Author: "other"}, {Item: None, Author: None}),
                None,
            )
        read, write = self.rng.choice([(True, False), (True, True), (False, True), (False, False)])
        block = in_database(self.targets[kind], read=read, write=write)
        alias = block.route.alias
        model = (
            dict.fromkeys((Item, Author), alias if read else None),
            dict.fromkeys((Item, Author), alias if write else None),
        )
        return block, model, kind

    def expected(self, model: type, index: int) -> str | None:
        for level in reversed(self.stack):
            if level[index][model] is not None:
                return level[index][model]
        return None

    def check(self, where: str) -> None:
        for model in (Item, Author):
            for index, decide in enumerate((router.db_for_read, router.db_for_write)):
                want = self.expected(model, index) or "default"
                got = decide(model)
                self.operations += 1
                if got != want:
                    self.misroutes.append(
                        f"{where}: {model.__name__} {index} -> {got}, expected {want}"
                    )

    def expected_rows(self) -> int:
        alias = self.expected(Item, 0) or "default"
        return self.rows[alias]

    def count(self, got: int, where: str) -> None:
        self.operations += 1
        self.queries += 1
        if got != self.expected_rows():
            self.misroutes.append(f"{where}: counted {got}, expected {self.expected_rows()}")

    def run_sync(self) -> None:
        try:
            while self.operations < self.budget:
                self.nest_sync(self.rng.randint(1, 3))
        finally:
            connections.close_all()

    def nest_sync(self, depth: int) -> None:
        if depth == 0:
            if self.rng.random() < 0.5:
                self.count(Item.objects.count(), "sync query")
            return
        block, model, kind = self.pick()
        self.runtime_blocks += kind in {"runtime", "reuse"}
        with block:
            self.stack.append(model)
            self.check("sync enter")
            self.nest_sync(depth - 1)
            self.stack.pop()
        self.check("sync exit")

    async def run_async(self) -> None:
        while self.operations < self.budget:
            await self.nest_async(self.rng.randint(1, 3))

    async def nest_async(self, depth: int) -> None:
        if depth == 0:
            if self.rng.random() < 0.5:
                self.count(await Item.objects.acount(), "async query")
            return
        block, model, kind = self.pick()
        self.runtime_blocks += kind in {"runtime", "reuse"}
        async with block:
            self.stack.append(model)
            self.check("async enter")
            await asyncio.sleep(0)
            await self.nest_async(depth - 1)
            self.check("async after await")
            self.stack.pop()
        self.check("async exit")


def test_stress_threads_and_tasks(runtime):
    """Zero misroutes and zero leaks over the routed operations of the run."""
    Item.objects.using("default").bulk_create(Item(name="d") for _ in range(ROWS["default"]))
    Item.objects.using("other").bulk_create(Item(name="o") for _ in range(ROWS["other"]))
    with in_database(runtime, write=True):
        Item.objects.bulk_create(Item(name="r") for _ in range(7))
    reuse = {**runtime, "CONN_MAX_AGE": 600}
    targets = {"default": "default", "other": "other", "runtime": runtime, "reuse": reuse}
    rows = {**ROWS, in_database(runtime).route.alias: 7, in_database(reuse).route.alias: 7}
    before = set(connections.settings)
    budget = figures.STRESS_OPERATIONS // (THREADS + TASKS)
    tally = Tally()
    workers = [Worker(n, targets, rows, budget) for n in range(THREADS + TASKS)]

    def in_thread(worker: Worker) -> None:
        worker.run_sync()

    def event_loop() -> None:
        async def main() -> None:
            await asyncio.gather(*(w.run_async() for w in workers[THREADS:]))

        asyncio.run(main())

    threads = [threading.Thread(target=in_thread, args=(w,)) for w in workers[:THREADS]]
    threads.append(threading.Thread(target=event_loop))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker in workers:
        tally.add(worker.operations, worker.queries, worker.runtime_blocks, worker.misroutes)

    close_idle_connections()
    leaked_aliases = len(set(connections.settings) ^ before) + len(active_aliases())
    leaked_sessions = sessions(runtime, expected=0)
    figures.record("stress_operations", tally.operations)
    figures.record("stress_queries", tally.queries)
    figures.record("stress_runtime_blocks", tally.runtime_blocks)
    figures.record("stress_misroutes", len(tally.misroutes))
    figures.record("stress_leaked_aliases", leaked_aliases)
    figures.record("stress_leaked_sessions", leaked_sessions)
    assert tally.misroutes == []
    assert leaked_aliases == 0
    assert leaked_sessions == 0
    assert tally.operations >= figures.STRESS_OPERATIONS
