"""What the routing panel records of a request: blocks, statements and dynroute's events.

Nothing here runs until a panel starts a :class:`Recording` (the toolbar's
``enable_instrumentation``), and nothing is left running after the last one stops:

- dynroute's signal receivers and Django's ``connection_created`` receiver are
  connected while at least one request is recorded (a count, under a lock: requests
  in other threads start and stop independently), and disconnected after the last;
- a statement hook (:mod:`dynroute.contrib.debug_toolbar._statements`) is put in the
  ``execute_wrappers`` of the connections a recorded request can use: the ones the
  recording thread has when it starts; then each connection opened while it runs
  (``connection_created``, in whatever thread: the async ORM's), and the connections
  of each block entered and runtime configuration registered.

What a receiver or the hook sees is recorded into the request's
:class:`~dynroute.contrib.debug_toolbar._records.Recording`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, cast

from django.db import connections
from django.db.backends.signals import connection_created

from dynroute import signals
from dynroute.contrib.debug_toolbar._records import (
    OPEN,
    RECORDING,
    BlockRecord,
    Open,
    Recording,
)
from dynroute.contrib.debug_toolbar._statements import (
    WRAPPED_LOCK,
    cover,
    cover_alias,
    unwrap,
)
from dynroute.core import DatabaseConfiguration, fixed_answers, frames, get_frame
from dynroute.replicas import Entry, PrimaryReplica
from dynroute.routing import InDatabase
from dynroute.writes import get_scope

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import ContextVar, Token

    from django.db.backends.base.base import BaseDatabaseWrapper

    from dynroute.routing import Route

__all__ = ["listening", "start", "stop"]


def start() -> Recording:
    """Record the routing of the calling request, here and in what it starts.

    Blocks already active (entered by a middleware before the toolbar's) are recorded
    first, marked ``early``.
    """
    recording = Recording()
    recording.token = RECORDING.set(recording)
    recording.open_token = OPEN.set(_early_blocks(recording))
    _listen()
    # Only the connections this thread already has: looking an alias up would make a
    # wrapper for it here, which would outlive a runtime alias's unregistering (and
    # costs one per alias: thousands with a database per tenant). Connections made
    # later are covered when they connect, or when a block enters on them.
    for connection in connections.all(initialized_only=True):
        cover(recording, connection)
    return recording


def stop(recording: Recording) -> None:
    """Stop recording: remove the hooks this recording put, and the receivers after the last.

    Idempotent; the recorded data stays readable.
    """
    with WRAPPED_LOCK:
        # Under the lock: a thread of the request may be covering a connection.
        if recording.stopped:
            return
        recording.stopped = True
        covered = list(recording.covered.values())
        recording.covered.clear()
    _reset(RECORDING, recording.token)
    _reset(OPEN, recording.open_token)
    try:
        for connection in covered:
            unwrap(connection)
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
    recording = RECORDING.get()
    if recording is None:
        return
    frame = get_frame()
    ask = frame[3] if frame is not None and frame[0] is block else None
    record = _block_record(recording, block, route, depth, ask)
    recording.blocks.append(record)
    OPEN.set((record, OPEN.get()))
    policy: object = route.policy
    if isinstance(policy, PrimaryReplica):
        # Their connections may not exist yet in this thread.
        for alias in (policy.primary, *policy.replicas):
            cover_alias(recording, alias)
    elif route.alias is not None:
        cover_alias(recording, route.alias)


def _on_block_exited(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    block: object,
    duration: float,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    if RECORDING.get() is None:
        return
    node = OPEN.get()
    while node is not None and node[0].block is not block:
        node = node[1]
    if node is None:
        return  # entered in another context, or before the recording
    node[0].duration_ms = round(duration * 1000, 3)
    OPEN.set(node[1])


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
    recording = RECORDING.get()
    if recording is None:
        return
    where = f" on {host}" if host else ""
    kept = "kept for reuse" if reuse else "closed after its last block"
    recording.event(
        "configuration_registered", f"{alias}: {engine} database {name!r}{where}, {kept}"
    )
    cover_alias(recording, alias)


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
    signals.replica_lagging: (
        "replica_lagging",
        lambda sent: f"{sent['alias']}: {sent['lag']:.1f} s behind, not chosen",
    ),
    signals.replica_caught_up: (
        "replica_caught_up",
        lambda sent: f"{sent['alias']}: {sent['lag']:.1f} s behind, chosen again",
    ),
}


def _on_event(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    signal: signals.DynrouteSignal,
    **sent: Any,  # noqa: ANN401 - the signal's arguments, described by _EVENTS
) -> None:
    """Record one of the events of :data:`_EVENTS` (Django passes the signal)."""
    recording = RECORDING.get()
    if recording is not None:
        name, describe = _EVENTS[signal]
        recording.event(name, describe(sent))


def _on_connection_created(
    sender: object,  # noqa: ARG001 - a signal receiver
    *,
    connection: BaseDatabaseWrapper,
    **kwargs: object,  # noqa: ARG001 - a signal receiver takes what future senders add
) -> None:
    recording = RECORDING.get()
    if recording is not None:
        cover(recording, connection)


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


def _early_blocks(recording: Recording) -> Open | None:
    """Record the blocks active before the recording, outermost first; return them open."""
    opened: Open | None = None
    for depth, each in enumerate(reversed(list(frames())), start=1):
        owner = each[0]
        if isinstance(owner, InDatabase):
            block = cast("InDatabase[str | None]", owner)
            record = _block_record(recording, block, block.route, depth, each[3], early=True)
            recording.blocks.append(record)
            opened = (record, opened)
    return opened
