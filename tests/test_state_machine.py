"""The route stack against a reference model: Hypothesis drives random blocks.

Blocks on aliases, runtime configurations (torn down or reused) and custom policies,
with every read/write combination, built through flags, strategies or policies, are
entered, nested, reused, left normally, by an exception, out of order, through
decorators and ``async with``. After every step the router's decision for each model
and direction must equal the model's, and the registered runtime aliases must be
exactly those the model expects. At the end no route is active and, once reused
connections are closed, the registered aliases are what they were.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dynroute import (
    DatabaseConfiguration,
    DynamicDbRouter,
    InDatabase,
    ReadOnly,
    ReadWrite,
    WriteOnly,
    close_idle_connections,
    in_database,
)
from dynroute.core._stack import CURRENT
from dynroute.exceptions import RouteStateError
from dynroute.runtime import active_aliases
from tests import figures
from tests.testapp.models import Author, Item

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

MODELS = (Item, Author)
ALIASES = ("default", "other")
ROUTER = DynamicDbRouter()


class ByModel:
    """A custom policy answering per model, from two fixed tables."""

    def __init__(self, reads: dict[type, str], writes: dict[type, str]) -> None:
        self.reads = reads
        self.writes = writes

    def db_for_read(self, model, /, **hints):
        return self.reads.get(model)

    def db_for_write(self, model, /, **hints):
        return self.writes.get(model)


@dataclass
class Spec:
    """What the model knows of a block: its answers, and its runtime alias if any."""

    block: InDatabase
    reads: dict[type, str | None]
    writes: dict[type, str | None]
    runtime: str | None = None
    reuse: bool = False


@dataclass
class Model:
    """The reference: a plain list of entered blocks, innermost last."""

    stack: list[Spec] = field(default_factory=list)
    idle: set[str] = field(default_factory=set)

    def decide(self, model: type, *, write: bool) -> str | None:
        for spec in reversed(self.stack):
            answer = (spec.writes if write else spec.reads)[model]
            if answer is not None:
                return answer
        return None

    def registered(self) -> set[str]:
        return {spec.runtime for spec in self.stack if spec.runtime} | self.idle

    def leave_from(self, index: int) -> None:
        """Drop the entry at ``index`` and everything above it."""
        for spec in self.stack[index:]:
            if spec.reuse and spec.runtime:
                self.idle.add(spec.runtime)
        del self.stack[index:]


def flag_strategy(*, read: bool, write: bool) -> object:
    """The strategy in_database(target, read=..., write=...) stands for, if any."""
    return {(True, False): ReadOnly, (True, True): ReadWrite, (False, True): WriteOnly}.get(
        (read, write)
    )


class RouteStack(RuleBasedStateMachine):
    """The state machine; ``folder`` is set by the test before it runs."""

    folder = None
    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.initial = set(connections.settings)
        base = {"ENGINE": "django.db.backends.sqlite3"}
        self.configurations = {
            "a": {**base, "NAME": str(self.folder / "a.sqlite3")},
            "b": {**base, "NAME": str(self.folder / "b.sqlite3")},
            "reuse": {**base, "NAME": str(self.folder / "c.sqlite3"), "CONN_MAX_AGE": 60},
        }

    @initialize()
    def start_clean(self) -> None:
        assert CURRENT.get() is None

    @rule(
        target=blocks,
        kind=st.sampled_from(["alias", "configuration", "policy"]),
        alias=st.sampled_from(ALIASES),
        configuration=st.sampled_from(["a", "b", "reuse"]),
        read=st.booleans(),
        write=st.booleans(),
        as_policy=st.booleans(),
        reads=st.dictionaries(st.sampled_from(MODELS), st.sampled_from(ALIASES)),
        writes=st.dictionaries(st.sampled_from(MODELS), st.sampled_from(ALIASES)),
    )
    def make_block(self, *, kind, alias, configuration, read, write, as_policy, reads, writes):
        if kind == "policy":
            block = in_database(policy=ByModel(reads, writes))
            return Spec(
                block,
                {m: reads.get(m) for m in MODELS},
                {m: writes.get(m) for m in MODELS},
            )
        settings_dict = self.configurations[configuration] if kind == "configuration" else None
        target = settings_dict if settings_dict is not None else alias
        strategy = flag_strategy(read=read, write=write)
        if as_policy and strategy is not None:
            block = in_database(policy=strategy(target))
        else:
            block = in_database(target, read=read, write=write)
        name = DatabaseConfiguration(settings_dict).alias if settings_dict else alias
        return Spec(
            block,
            dict.fromkeys(MODELS, name if read else None),
            dict.fromkeys(MODELS, name if write else None),
            runtime=name if settings_dict else None,
            reuse=configuration == "reuse" and settings_dict is not None,
        )

    @rule(spec=blocks)
    def enter(self, spec):
        route = spec.block.__enter__()
        assert route is spec.block.route
        self.model.stack.append(spec)
        if spec.runtime:
            self.model.idle.discard(spec.runtime)

    @rule(spec=blocks)
    def enter_async(self, spec):
        """``async with``'s entry, in this context (asgiref copies the change back)."""
        route = async_to_sync(spec.block.__aenter__)()
        assert route is spec.block.route
        self.model.stack.append(spec)
        if spec.runtime:
            self.model.idle.discard(spec.runtime)

    @precondition(lambda self: self.model.stack)
    @rule()
    def leave_innermost_async(self):
        spec = self.model.stack[-1]
        async_to_sync(spec.block.__aexit__)(None, None, None)
        self.model.leave_from(len(self.model.stack) - 1)

    @precondition(lambda self: len(self.model.stack) >= 2)
    @rule(data=st.data())
    def leave_an_outer_block_first_async(self, data):
        index = data.draw(st.integers(0, len(self.model.stack) - 2))
        spec = self.model.stack[index]
        innermost = max(i for i, s in enumerate(self.model.stack) if s.block is spec.block)
        async_to_sync(spec.block.__aexit__)(None, None, None)
        self.model.leave_from(innermost)

    @precondition(lambda self: self.model.stack)
    @rule(raising=st.booleans())
    def leave_innermost(self, raising):
        spec = self.model.stack[-1]
        if raising:
            error = ValueError("in the body")
            assert not spec.block.__exit__(ValueError, error, None)
        else:
            spec.block.__exit__(None, None, None)
        self.model.leave_from(len(self.model.stack) - 1)

    @precondition(lambda self: len(self.model.stack) >= 2)
    @rule(data=st.data())
    def leave_an_outer_block_first(self, data):
        index = data.draw(st.integers(0, len(self.model.stack) - 2))
        spec = self.model.stack[index]
        # Leaving a block leaves its innermost entry, and drops what is above it.
        innermost = max(i for i, s in enumerate(self.model.stack) if s.block is spec.block)
        spec.block.__exit__(None, None, None)
        self.model.leave_from(innermost)

    @rule(spec=blocks)
    def leave_a_block_that_is_not_active(self, spec):
        if any(s.block is spec.block for s in self.model.stack):
            return
        with pytest.raises(RouteStateError):
            spec.block.__exit__(None, None, None)

    @rule(spec=blocks, raising=st.booleans())
    def call_a_decorated_function(self, spec, raising):
        expected = self.expected_with(spec)
        seen = []

        @spec.block
        def body() -> None:
            seen.append(self.decisions())
            if raising:
                raise LookupError

        if raising:
            with pytest.raises(LookupError):
                body()
        else:
            body()
        assert seen == [expected]
        self.after_a_whole_block(spec)

    @rule(spec=blocks)
    def run_an_async_block(self, spec):
        expected = self.expected_with(spec)

        async def main():
            async with spec.block:
                await asyncio.sleep(0)
                return self.decisions()

        assert asyncio.run(main()) == expected
        self.after_a_whole_block(spec)

    def expected_with(self, spec: Spec) -> dict[tuple[str, str], str | None]:
        self.model.stack.append(spec)
        try:
            return self.expected()
        finally:
            self.model.stack.pop()

    def after_a_whole_block(self, spec: Spec) -> None:
        if spec.reuse and spec.runtime:
            self.model.idle.add(spec.runtime)

    def decisions(self) -> dict[tuple[str, str], str | None]:
        return {
            (model.__name__, direction): getattr(ROUTER, f"db_for_{direction}")(model)
            for model in MODELS
            for direction in ("read", "write")
        }

    def expected(self) -> dict[tuple[str, str], str | None]:
        return {
            (model.__name__, direction): self.model.decide(model, write=direction == "write")
            for model in MODELS
            for direction in ("read", "write")
        }

    @invariant()
    def router_agrees_with_the_model(self):
        assert self.decisions() == self.expected()
        assert set(active_aliases()) == self.model.registered()
        assert set(connections.settings) == self.initial | self.model.registered()
        figures.record("state_machine_steps")

    def teardown(self):
        for spec in reversed(self.model.stack):
            spec.block.__exit__(None, None, None)
        assert CURRENT.get() is None
        close_idle_connections()
        assert set(connections.settings) == self.initial
        assert not active_aliases()
        figures.record("state_machine_examples")


def test_the_route_stack_matches_the_model(tmp_path, caplog):
    """Random programs of blocks: the router always answers as the model does."""
    RouteStack.folder = tmp_path
    caplog.set_level(logging.ERROR, logger="dynroute")  # out-of-order exits warn, by design
    run_state_machine_as_test(
        RouteStack,
        settings=settings(
            figures.HYPOTHESIS,
            max_examples=figures.STATE_MACHINE_EXAMPLES,
            stateful_step_count=25,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
