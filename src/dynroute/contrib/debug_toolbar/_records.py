"""What the routing panel keeps of a request: its blocks, its statements, dynroute's events.

The :class:`Recording` of the request being recorded is found in a ContextVar
(:data:`RECORDING`), which the request's code and what it starts (``sync_to_async``
threads, tasks) inherit: requests recorded at the same time never see each other's
queries, and code that runs for no recorded request finds ``None`` and records
nothing. The recording itself is a mutable object shared on purpose by the threads and
tasks of one request (each only appends); which blocks are open is per thread and
task (:data:`OPEN`), an immutable linked list, as the route stack is.

Nothing recorded holds a password or a query parameter: blocks are described by the
``repr`` of their policy (which never shows a password), statements by their SQL text
with literals blanked.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["OPEN", "RECORDING", "BlockRecord", "Open", "QueryRecord", "Recording"]


@dataclass(slots=True)
class BlockRecord:
    """One entry of an ``in_database`` block, as the panel shows it."""

    number: int
    policy: str
    alias: str | None
    reads: str
    writes: str
    depth: int
    prevents_writes: bool
    replica: str | None
    runtime: bool
    #: Entered before the recording started (by a middleware outside the toolbar's).
    early: bool = False
    duration_ms: float | None = None
    #: The block object, to attribute statements to this entry (never shown).
    block: object = field(default=None, repr=False)

    def stats(self) -> dict[str, object]:
        """The record as the toolbar stores it (plain values, without the block)."""
        return {
            "number": self.number,
            "policy": self.policy,
            "alias": self.alias,
            "reads": self.reads,
            "writes": self.writes,
            "depth": self.depth,
            "prevents_writes": self.prevents_writes,
            "replica": self.replica,
            "runtime": self.runtime,
            "early": self.early,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One statement sent to a database, and what routed it there."""

    number: int
    alias: str
    sql: str
    many: bool
    writes: bool
    #: The number of the deciding block's record, or ``None``.
    block: int | None
    #: The deciding block (``"block #2: ReadOnly"``), or why no block decided.
    decided_by: str
    #: The ``repr`` of the deciding block's policy, or ``None``.
    policy: str | None
    rule: str
    prevented: bool
    pinned: str | None
    replica: str | None
    duration_ms: float
    error: str | None

    def stats(self) -> dict[str, object]:
        """The record as the toolbar stores it."""
        return {
            "number": self.number,
            "alias": self.alias,
            "sql": self.sql,
            "many": self.many,
            "writes": self.writes,
            "block": self.block,
            "decided_by": self.decided_by,
            "policy": self.policy,
            "rule": self.rule,
            "prevented": self.prevented,
            "pinned": self.pinned,
            "replica": self.replica,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


#: The block entries open in this thread or task, innermost first.
Open: TypeAlias = "tuple[BlockRecord, Open | None]"


class Recording:
    """What one request did: its blocks, its statements, dynroute's events.

    Appended to by the threads and tasks of the request (``list.append`` is atomic);
    read by the panel once the request is done.
    """

    def __init__(self) -> None:
        """Start empty; :func:`start` makes it the one recorded into."""
        self.blocks: list[BlockRecord] = []
        self.queries: list[QueryRecord] = []
        self.events: list[dict[str, object]] = []
        #: One sequence for blocks, statements and events: the order they happened in.
        self.numbers = itertools.count(1)
        #: The connections whose hook this recording counted, by ``id()``.
        self.covered: dict[int, BaseDatabaseWrapper] = {}
        self.stopped = False
        #: What :func:`stop` resets.
        self.token: Token[Recording | None] | None = None
        self.open_token: Token[Open | None] | None = None

    def stats(self) -> dict[str, object]:
        """Everything recorded, as the toolbar stores it (JSON values only)."""
        return {
            "blocks": [record.stats() for record in self.blocks],
            "queries": [record.stats() for record in self.queries],
            "events": list(self.events),
        }

    def event(self, signal: str, detail: str) -> None:
        """Record that dynroute sent ``signal``."""
        self.events.append({"number": next(self.numbers), "signal": signal, "detail": detail})


#: The recording of the request the code here runs for, if it is recorded.
RECORDING: ContextVar[Recording | None] = ContextVar("dynroute_toolbar_recording", default=None)
#: The block entries open in this thread or task, innermost first.
OPEN: ContextVar[Open | None] = ContextVar("dynroute_toolbar_open", default=None)
