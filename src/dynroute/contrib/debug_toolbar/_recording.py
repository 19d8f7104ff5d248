"""What the routing panel records of a request: blocks, statements and dynroute's events.

Nothing here runs until a panel starts a :class:`Recording` (the toolbar's
``enable_instrumentation``), and nothing is left running after the last one stops:

- dynroute's signal receivers and Django's ``connection_created`` receiver are
  connected while at least one request is recorded (a count, under a lock: requests
  in other threads start and stop independently), and disconnected after the last;
- a statement hook is put in the ``execute_wrappers`` of the connections a recorded
  request can use: every alias in the recording thread, when it starts; then each
  connection opened while it runs (``connection_created``, in whatever thread: the
  async ORM's), and the alias of each runtime configuration registered. Each is
  counted per connection and removed when the last request that put it there stops.
  It goes first in the list, as dynroute's write hook does: a user's own
  ``connection.execute_wrapper()`` block pops the last wrapper on exit, which must
  never be this one.

What a receiver or the hook sees is recorded into the :class:`Recording` found in a
ContextVar, which the request's code and what it starts (``sync_to_async`` threads,
tasks) inherit: requests recorded at the same time never see each other's queries,
and code that runs for no recorded request finds ``None`` and records nothing. The
recording itself is a mutable object shared on purpose by the threads and tasks of
one request (each only appends); which blocks are open is per thread and task, in a
ContextVar holding an immutable linked list, as the route stack is.

Nothing recorded holds a password or a query parameter: blocks are described by the
``repr`` of their policy (which never shows a password), statements by their SQL text,
whose values are placeholders.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from django.db import connections
from django.db.backends.signals import connection_created

from dynroute import signals
from dynroute._block import InDatabase
from dynroute._policies import fixed_answers
from dynroute._replicas import Entry, PrimaryReplica, current_entry, get_written
from dynroute._sql import blank_literals, may_write, statement_text
from dynroute._state import get_frame
from dynroute._targets import DatabaseConfiguration
from dynroute._writes import get_scope

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.backends.base.base import BaseDatabaseWrapper

    from dynroute._block import Route
    from dynroute._state import Frame

__all__ = ["BlockRecord", "QueryRecord", "Recording", "start", "stop"]

#: In a PrimaryReplica block's pins (dynroute._replicas): every primary, as inside
#: ``use_primary()``. Never an alias: PrimaryReplica refuses an empty one.
_EVERY_PRIMARY: Final = ""


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
_Open: TypeAlias = "tuple[BlockRecord, _Open | None]"


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
        self.open_token: Token[_Open | None] | None = None

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


_RECORDING: ContextVar[Recording | None] = ContextVar("dynroute_toolbar_recording", default=None)
_OPEN: ContextVar[_Open | None] = ContextVar("dynroute_toolbar_open", default=None)


def start() -> Recording:
    """Record the routing of the calling request, here and in what it starts.

    Blocks already active (entered by a middleware before the toolbar's) are recorded
    first, marked ``early``.
    """
    recording = Recording()
    recording.token = _RECORDING.set(recording)
    recording.open_token = _OPEN.set(_early_blocks(recording))
    _listen()
    # Only the connections this thread already has: looking an alias up would make a
    # wrapper for it here, which would outlive a runtime alias's unregistering (and
    # costs one per alias: thousands with a database per tenant). Connections made
    # later are covered when they connect, or when a block enters on them.
    for connection in connections.all(initialized_only=True):
        _cover(recording, connection)
    return recording


def stop(recording: Recording) -> None:
    """Stop recording: remove the hooks this recording put, and the receivers after the last.

    Idempotent; the recorded data stays readable.
    """
    with _WRAPPED_LOCK:
        # Under the lock: a thread of the request may be covering a connection.
        if recording.stopped:
            return
        recording.stopped = True
        covered = list(recording.covered.values())
        recording.covered.clear()
    _reset(_RECORDING, recording.token)
    _reset(_OPEN, recording.open_token)
    try:
        for connection in covered:
            _unwrap(connection)
    finally:
        _unlisten()


def _reset(var: ContextVar[Any], token: Token[Any] | None) -> None:
    """Reset ``var``; to its default if the token is of another context."""
    if token is None:
        return
    try:
        var.reset(token)
    except ValueError:  # stopped in another context than it started in
        var.set(None)


# Receivers: connected while a request is recorded.

_users = 0
_USERS_LOCK = threading.Lock()


def _listen() -> None:
    global _users  # noqa: PLW0603 - the count of recordings, under the lock
    with _USERS_LOCK:
        _users += 1
        if _users == 1:
            for signal, receiver in _RECEIVERS:
                signal.connect(receiver, weak=False, dispatch_uid=_UID)
            connection_created.connect(_on_connection_created, weak=False, dispatch_uid=_UID)


def _unlisten() -> None:
    global _users  # noqa: PLW0603 - see _listen
    with _USERS_LOCK:
        _users -= 1
        if _users == 0:
            connection_created.disconnect(dispatch_uid=_UID)
            for signal, _ in _RECEIVERS:
                signal.disconnect(dispatch_uid=_UID)


def listening() -> bool:
    """Return whether a recording is running in this process (its receivers connected)."""
    return _users > 0


_UID: Final = "dynroute.contrib.debug_toolbar"


def _on_block_entered(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    block: InDatabase[Any],
    route: Route[Any],
    depth: int,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    recording = _RECORDING.get()
    if recording is None:
        return
    frame = get_frame()
    ask = frame[3] if frame is not None and frame[0] is block else None
    record = _block_record(recording, block, route, depth, ask)
    recording.blocks.append(record)
    _OPEN.set((record, _OPEN.get()))
    policy: object = route.policy
    if isinstance(policy, PrimaryReplica):
        # Their connections may not exist yet in this thread.
        for alias in (policy.primary, *policy.replicas):
            _cover_alias(recording, alias)
    elif route.alias is not None:
        _cover_alias(recording, route.alias)


def _on_block_exited(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    block: object,
    duration: float,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    if _RECORDING.get() is None:
        return
    node = _OPEN.get()
    while node is not None and node[0].block is not block:
        node = node[1]
    if node is None:
        return  # entered in another context, or before the recording
    node[0].duration_ms = round(duration * 1000, 3)
    _OPEN.set(node[1])


def _on_configuration_registered(  # noqa: PLR0913 - the signal's arguments
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    alias: str,
    engine: str,
    name: str,
    host: str,
    reuse: bool,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    recording = _RECORDING.get()
    if recording is None:
        return
    where = f" on {host}" if host else ""
    kept = "kept for reuse" if reuse else "closed after its last block"
    recording.event(
        "configuration_registered", f"{alias}: {engine} database {name!r}{where}, {kept}"
    )
    _cover_alias(recording, alias)


#: How the panel lists dynroute's other events: each signal's name, and its text.
_EVENTS: Final[dict[signals.DynrouteSignal, tuple[str, Callable[[dict[str, Any]], str]]]] = {
    signals.configuration_closed: (
        "configuration_closed",
        lambda sent: f"{sent['alias']}: {sent['reason']}",
    ),
    signals.replica_marked_down: (
        "replica_marked_down",
        lambda sent: f"{sent['alias']}: {sent['error']}, skipped for {sent['seconds']:g} s",
    ),
    signals.replica_restored: ("replica_restored", lambda sent: str(sent["alias"])),
    signals.reads_pinned: (
        "reads_pinned",
        lambda sent: f"reads go to {sent['primary']} (after a {sent['reason']})",
    ),
}


def _on_event(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    signal: signals.DynrouteSignal,
    **sent: Any,  # noqa: ANN401 - the signal's arguments, described by _EVENTS
) -> None:
    """Record one of the events of :data:`_EVENTS` (Django passes the signal)."""
    recording = _RECORDING.get()
    if recording is not None:
        name, describe = _EVENTS[signal]
        recording.event(name, describe(sent))


def _on_connection_created(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    connection: BaseDatabaseWrapper,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    recording = _RECORDING.get()
    if recording is not None:
        _cover(recording, connection)


_RECEIVERS: Final[tuple[tuple[signals.DynrouteSignal, Callable[..., None]], ...]] = (
    (signals.block_entered, _on_block_entered),
    (signals.block_exited, _on_block_exited),
    (signals.configuration_registered, _on_configuration_registered),
    *((signal, _on_event) for signal in _EVENTS),
)


# Blocks


def _block_record(  # noqa: PLR0913 - what an entry is described by
    recording: Recording,
    block: InDatabase[Any],
    route: Route[Any],
    depth: int,
    ask: object,
    *,
    early: bool = False,
) -> BlockRecord:
    policy = route.policy
    fixed = fixed_answers(policy)
    replica: str | None = None
    if fixed is not None:
        target, read, write = fixed
        reads = read or "enclosing block"
        writes = write or "enclosing block"
        runtime = type(target) is DatabaseConfiguration
    elif type(policy) is PrimaryReplica:
        runtime = False
        writes = policy.primary
        if type(ask) is Entry:
            replica = ask.replica
            reads = replica or f"{policy.primary} (every replica down)"
        else:
            reads = "a replica"
    else:
        runtime = False
        reads = writes = "asked per query"
    return BlockRecord(
        number=next(recording.numbers),
        policy=repr(policy),
        alias=route.alias,
        reads=reads,
        writes=writes,
        depth=depth,
        prevents_writes=_prevents(block),
        replica=replica,
        runtime=runtime,
        early=early,
        block=block,
    )


def _prevents(block: object) -> bool:
    """Whether ``block`` refuses writes here (its own ``prevent_writes=True`` scope)."""
    scope = get_scope()
    while scope is not None:
        if scope[1] is block:
            return scope[0]
        scope = scope[2]
    return False


def _early_blocks(recording: Recording) -> _Open | None:
    """Record the blocks active before the recording, outermost first; return them open."""
    frames: list[Frame] = []
    frame = get_frame()
    while frame is not None:
        frames.append(frame)
        frame = frame[4]
    opened: _Open | None = None
    for depth, each in enumerate(reversed(frames), start=1):
        owner = each[0]
        if isinstance(owner, InDatabase):
            block = cast("InDatabase[str | None]", owner)
            record = _block_record(recording, block, block.route, depth, each[3], early=True)
            recording.blocks.append(record)
            opened = (record, opened)
    return opened


# Statements


def _cover_alias(recording: Recording, alias: str) -> None:
    """Put the hook on this thread's connection to ``alias``, if it is still configured."""
    if alias not in connections.settings:
        return
    try:
        connection = connections[alias]
    except Exception:  # noqa: BLE001 - unregistered meanwhile: nothing to record there
        return
    _cover(recording, connection)


#: The connections holding the hook, by ``id()``: the connection and how many
#: recordings put it there.
_WRAPPED: dict[int, tuple[BaseDatabaseWrapper, int]] = {}
_WRAPPED_LOCK = threading.Lock()


def _cover(recording: Recording, connection: BaseDatabaseWrapper) -> None:
    key = id(connection)
    if key in recording.covered or recording.stopped:
        return
    with _WRAPPED_LOCK:
        # Again under the lock: two threads of the request may cover it at once.
        if key in recording.covered or recording.stopped:
            return
        held = _WRAPPED.get(key)
        count = 0 if held is None else held[1]
        _WRAPPED[key] = (connection, count + 1)
        if _record_statement not in connection.execute_wrappers:
            connection.execute_wrappers.insert(0, _record_statement)
        recording.covered[key] = connection


def _unwrap(connection: BaseDatabaseWrapper) -> None:
    key = id(connection)
    with _WRAPPED_LOCK:
        held = _WRAPPED.get(key)
        if held is None:
            return
        if held[1] > 1:
            _WRAPPED[key] = (connection, held[1] - 1)
            return
        del _WRAPPED[key]
        if _record_statement in connection.execute_wrappers:
            connection.execute_wrappers.remove(_record_statement)


def wrapped_connections() -> int:
    """Return how many connections hold the statement hook now (for tests)."""
    return len(_WRAPPED)


def _record_statement(
    execute: Callable[[Any, Any, bool, dict[str, Any]], Any],
    sql: Any,  # noqa: ANN401 - a str, or a driver's composed statement
    params: Any,  # noqa: ANN401 - the driver's parameters: never recorded
    many: bool,  # noqa: FBT001 - Django's execute wrapper signature
    context: dict[str, Any],
) -> Any:  # noqa: ANN401 - whatever the cursor returns
    recording = _RECORDING.get()
    if recording is None:
        return execute(sql, params, many, context)
    connection: BaseDatabaseWrapper = context["connection"]
    number = next(recording.numbers)
    text = statement_text(sql, connection)
    writes = text is None or may_write(text, connection.vendor)
    owner, rule = _decide(get_frame(), connection, writes=writes)
    scope = get_scope()
    pins = get_written()
    entry = current_entry()
    error: str | None = None
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    except BaseException as raised:
        error = type(raised).__name__
        raise
    finally:
        duration = time.perf_counter() - started
        record = _record_of(owner)
        block: int | None = None
        policy: str | None = None
        if owner is None:
            decided_by, rule = rule, ""
        else:
            policy = repr(owner.route.policy)
            name = type(owner.route.policy).__name__
            if record is not None:
                block = record.number
                decided_by = f"block #{block}: {name}"
            else:  # entered in a context this one does not descend from
                decided_by = f"a block: {name}"
        recording.queries.append(
            QueryRecord(
                number=number,
                alias=connection.alias,
                sql=(
                    blank_literals(text, connection.vendor)
                    if text is not None
                    else "(a statement that is not a string)"
                ),
                many=many,
                writes=writes,
                block=block,
                decided_by=decided_by,
                policy=policy,
                rule=rule,
                prevented=scope is not None and scope[0],
                pinned=_pins_text(pins),
                replica=entry.replica if entry is not None else None,
                duration_ms=round(duration * 1000, 3),
                error=error,
            )
        )


def _pins_text(pins: frozenset[str] | None) -> str | None:
    if not pins:
        return None
    return ", ".join(
        "every primary (use_primary())" if pin == _EVERY_PRIMARY else pin for pin in sorted(pins)
    )


def _record_of(owner: InDatabase[Any] | None) -> BlockRecord | None:
    node = _OPEN.get() if owner is not None else None
    while node is not None:
        if node[0].block is owner:
            return node[0]
        node = node[1]
    return None


#: ``(block, rule, whether the block's answer is the statement's database)``; the
#: last is ``None`` where it cannot be known (a custom policy, asked per query).
_Answer: TypeAlias = "tuple[InDatabase[Any], str, bool | None]"


def _decide(
    frame: Frame | None, connection: BaseDatabaseWrapper, *, writes: bool
) -> tuple[InDatabase[Any] | None, str]:
    """Return the block that sent a statement to ``connection``, and by which rule.

    Without one, the block is ``None`` and the rule says why.
    """
    if frame is None:
        return None, "no block: Django's default"
    alias = connection.alias
    answer = _answer(frame, connection, writes=writes)
    if answer is not None and answer[2] is not False:
        return answer[0], answer[1]
    # A read made where writes go (select_for_update(), get_or_create()), or the
    # reverse: the other direction's answer.
    other = _answer(frame, connection, writes=not writes)
    if other is not None and other[2]:
        return other[0], other[1]
    if answer is None:
        direction = "writes" if writes else "reads"
        return None, f"no block routes {direction}: Django's default"
    return None, f"not the block's database ({alias}): .using(), or another router"


def _answer(
    frame: Frame | None, connection: BaseDatabaseWrapper, *, writes: bool
) -> _Answer | None:
    """The innermost block with an answer for the direction, as the router walks them."""
    alias = connection.alias
    while frame is not None:
        owner = frame[0]
        ask = frame[3]
        if isinstance(owner, InDatabase):
            block = cast("InDatabase[str | None]", owner)
            policy = block.route.policy
            name = type(policy).__name__
            fixed = fixed_answers(policy)
            if fixed is not None:
                own = fixed[2] if writes else fixed[1]
                if own is not None:
                    return block, f"{name}: {'writes' if writes else 'reads'}", own == alias
            elif type(ask) is Entry:
                if writes:
                    return block, "PrimaryReplica: writes to the primary", alias == ask.primary
                rule = _read_rule(ask, connection)
                group = (ask.primary, *_replicas_of(policy))
                return block, rule, alias in group
            elif ask is not None:
                return block, f"{name}: asked per query", None
        frame = frame[4]
    return None


def _replicas_of(policy: object) -> tuple[str, ...]:
    """The replicas of a PrimaryReplica policy (none for another)."""
    return policy.replicas if type(policy) is PrimaryReplica else ()


def _read_rule(entry: Entry, connection: BaseDatabaseWrapper) -> str:  # noqa: PLR0911 - a rule per case
    """Why a PrimaryReplica block's read went to ``connection``."""
    alias = connection.alias
    if alias == entry.replica:
        return "PrimaryReplica: the replica chosen on entry"
    if alias != entry.primary:
        return "PrimaryReplica: another replica (the one chosen is down)"
    pins = get_written()
    if pins and _EVERY_PRIMARY in pins:
        return "PrimaryReplica: the primary, inside use_primary()"
    if pins and alias in pins:
        return "PrimaryReplica: the primary, pinned after a write"
    if connection.in_atomic_block:
        return "PrimaryReplica: the primary, inside a transaction"
    if entry.replica is None:
        return "PrimaryReplica: the primary, every replica is down"
    return "PrimaryReplica: the primary"
