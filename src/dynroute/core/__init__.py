"""The core: the route stack and the vocabulary every other room speaks.

- ``_stack``: the route stack of each thread and task (frames, their one walk);
- ``_targets`` and ``_settings``: where a block routes (an alias, or a configuration);
- ``_policies``: what a block decides per query (the built-in strategies);
- ``_decorating``: a block that is also a decorator of sync and async functions;
- ``_sql``: what a statement does (reads, or may write), for the rooms that look at SQL.

It imports no other room of dynroute (an import-linter contract says so); the others
import it through this face.
"""

from __future__ import annotations

from dynroute.core._decorating import (
    Block,
    Decorator,
    SyncScope,
    iscoroutinefunction,
    markcoroutinefunction,
)
from dynroute.core._policies import (
    ReadOnly,
    ReadWrite,
    RoutingHints,
    RoutingPolicy,
    WriteOnly,
    fixed_answers,
    strategy_for,
)
from dynroute.core._settings import DatabaseSettings, copy_structure
from dynroute.core._sql import blank_literals, may_write, refused_part, statement_text
from dynroute.core._stack import (
    ASK,
    Answer,
    Frame,
    frames,
    get_frame,
    pop,
    push,
    set_frame,
    walk,
)
from dynroute.core._targets import (
    DatabaseAlias,
    DatabaseConfiguration,
    DatabaseTarget,
    TargetLike,
    check_alias,
    claim_alias,
    configuration_key,
    release_alias,
    to_target,
)

__all__ = [
    "ASK",
    "Answer",
    "Block",
    "DatabaseAlias",
    "DatabaseConfiguration",
    "DatabaseSettings",
    "DatabaseTarget",
    "Decorator",
    "Frame",
    "ReadOnly",
    "ReadWrite",
    "RoutingHints",
    "RoutingPolicy",
    "SyncScope",
    "TargetLike",
    "WriteOnly",
    "blank_literals",
    "check_alias",
    "claim_alias",
    "configuration_key",
    "copy_structure",
    "fixed_answers",
    "frames",
    "get_frame",
    "iscoroutinefunction",
    "markcoroutinefunction",
    "may_write",
    "pop",
    "push",
    "refused_part",
    "release_alias",
    "set_frame",
    "statement_text",
    "strategy_for",
    "to_target",
    "walk",
]
