"""The panel's statement hook: each statement's database, and the block and rule that sent it.

The hook is put first in the ``execute_wrappers`` of the connections a recorded
request can use (as dynroute's write hook is: a user's own
``connection.execute_wrapper()`` block pops the last wrapper on exit, which must never
be this one), counted per connection, and removed when the last request that put it
there stops. A decision is explained by asking the code that made it: a built-in
strategy's fixed answers, a ``PrimaryReplica`` entry's ``read_reason()``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from django.db import connections

from dynroute.contrib.debug_toolbar._records import OPEN, RECORDING, QueryRecord
from dynroute.core import (
    blank_literals,
    fixed_answers,
    frames,
    get_frame,
    may_write,
    statement_text,
)
from dynroute.replicas import Entry, PrimaryReplica, current_entry, describe_pins, get_pins
from dynroute.routing import InDatabase
from dynroute.writes import get_scope

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.backends.base.base import BaseDatabaseWrapper

    from dynroute.contrib.debug_toolbar._records import BlockRecord, Recording

__all__ = ["cover", "cover_alias", "record_statement", "unwrap", "wrapped_connections"]


def cover_alias(recording: Recording, alias: str) -> None:
    """Put the hook on this thread's connection to ``alias``, if it is still configured."""
    if alias not in connections.settings:
        return
    try:
        connection = connections[alias]
    except Exception:  # noqa: BLE001 - unregistered meanwhile: nothing to record there
        return
    cover(recording, connection)


#: The connections holding the hook, by ``id()``: the connection and how many
#: recordings put it there.
_WRAPPED: dict[int, tuple[BaseDatabaseWrapper, int]] = {}
WRAPPED_LOCK = threading.Lock()


def cover(recording: Recording, connection: BaseDatabaseWrapper) -> None:
    key = id(connection)
    if key in recording.covered or recording.stopped:
        return
    with WRAPPED_LOCK:
        # Again under the lock: two threads of the request may cover it at once.
        if key in recording.covered or recording.stopped:
            return
        held = _WRAPPED.get(key)
        count = 0 if held is None else held[1]
        _WRAPPED[key] = (connection, count + 1)
        if record_statement not in connection.execute_wrappers:
            connection.execute_wrappers.insert(0, record_statement)
        recording.covered[key] = connection


def unwrap(connection: BaseDatabaseWrapper) -> None:
    key = id(connection)
    with WRAPPED_LOCK:
        held = _WRAPPED.get(key)
        if held is None:
            return
        if held[1] > 1:
            _WRAPPED[key] = (connection, held[1] - 1)
            return
        del _WRAPPED[key]
        if record_statement in connection.execute_wrappers:
            connection.execute_wrappers.remove(record_statement)


def wrapped_connections() -> int:
    """Return how many connections hold the statement hook now (for tests)."""
    return len(_WRAPPED)


def record_statement(
    execute: Callable[[Any, Any, bool, dict[str, Any]], Any],
    sql: Any,  # noqa: ANN401 - a str, or a driver's composed statement
    params: Any,  # noqa: ANN401 - the driver's parameters: never recorded
    many: bool,  # noqa: FBT001 - Django's execute wrapper signature
    context: dict[str, Any],
) -> Any:  # noqa: ANN401 - whatever the cursor returns
    recording = RECORDING.get()
    if recording is None:
        return execute(sql, params, many, context)
    connection: BaseDatabaseWrapper = context["connection"]
    number = next(recording.numbers)
    text = statement_text(sql, connection)
    writes = text is None or may_write(text, connection.vendor)
    owner, rule = _decide(connection, writes=writes)
    scope = get_scope()
    pins = get_pins()
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
                pinned=describe_pins(pins),
                replica=entry.replica if entry is not None else None,
                duration_ms=round(duration * 1000, 3),
                error=error,
            )
        )


def _record_of(owner: InDatabase[Any] | None) -> BlockRecord | None:
    node = OPEN.get() if owner is not None else None
    while node is not None:
        if node[0].block is owner:
            return node[0]
        node = node[1]
    return None


#: ``(block, rule, whether the block's answer is the statement's database)``; the
#: last is ``None`` where it cannot be known (a custom policy, asked per query).
_Answer: TypeAlias = "tuple[InDatabase[Any], str, bool | None]"


def _decide(connection: BaseDatabaseWrapper, *, writes: bool) -> tuple[InDatabase[Any] | None, str]:
    """Return the block that sent a statement to ``connection``, and by which rule.

    Without one, the block is ``None`` and the rule says why.
    """
    if get_frame() is None:
        return None, "no block: Django's default"
    alias = connection.alias
    answer = _answer(connection, writes=writes)
    if answer is not None and answer[2] is not False:
        return answer[0], answer[1]
    # A read made where writes go (select_for_update(), get_or_create()), or the
    # reverse: the other direction's answer.
    other = _answer(connection, writes=not writes)
    if other is not None and other[2]:
        return other[0], other[1]
    if answer is None:
        direction = "writes" if writes else "reads"
        return None, f"no block routes {direction}: Django's default"
    return None, f"not the block's database ({alias}): .using(), or another router"


def _answer(connection: BaseDatabaseWrapper, *, writes: bool) -> _Answer | None:
    """The innermost block with an answer for the direction, as the router walks them."""
    alias = connection.alias
    for frame in frames():
        owner = frame[0]
        ask = frame[3]
        if not isinstance(owner, InDatabase):
            continue
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
            rule = f"PrimaryReplica: {ask.read_reason(alias)}"
            group = (ask.primary, *_replicas_of(policy))
            return block, rule, alias in group
        elif ask is not None:
            return block, f"{name}: asked per query", None
    return None


def _replicas_of(policy: object) -> tuple[str, ...]:
    """The replicas of a PrimaryReplica policy (none for another)."""
    return policy.replicas if type(policy) is PrimaryReplica else ()
