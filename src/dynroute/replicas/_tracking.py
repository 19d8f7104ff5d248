"""What a ``PrimaryReplica`` block records while it is active: the writes that pin its reads.

A block starts recording when it is entered (:func:`entered`) and forgets when the
outermost one is left (:func:`leave`). The write hook (``dynroute.writes``), which sees
every statement, routed or not, calls :func:`note_statement`: a statement that may
write to a primary pins the reads of this thread or task to it, including writes that
never ask the router (``.using()``, raw SQL). The request middleware uses
:func:`read_primaries` and :func:`current_entry`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import DatabaseError

from dynroute import _switches, observe
from dynroute.core import frames, may_write, statement_text
from dynroute.replicas._health import connection
from dynroute.replicas._pins import EVERY_PRIMARY, FORCED, PINS, USED_PRIMARY
from dynroute.replicas._policy import PRIMARIES, Entry, PrimaryReplica
from dynroute.replicas._positions import NEEDS, PRIMARY_ONLY, Position, supports, written

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = [
    "current_entry",
    "entered",
    "leave",
    "note_statement",
    "positions_to_carry",
    "read_primaries",
    "written_positions",
]

logger = logging.getLogger("dynroute")


def entered() -> None:
    """After a PrimaryReplica block's frame is pushed: record its writes from now on."""
    if PINS.get() is None:
        PINS.set(EVERY_PRIMARY if FORCED.get() else frozenset())


def leave() -> None:
    """After a PrimaryReplica block's frame is gone: forget the writes if it was the outermost."""
    if current_entry() is None:
        PINS.set(None)
        if USED_PRIMARY.get():
            USED_PRIMARY.set(False)


def current_entry() -> Entry | None:
    """Return the entry of the innermost active PrimaryReplica block here, if any."""
    for frame in frames():
        ask = frame[3]
        if type(ask) is Entry:
            return ask
    return None


def note_statement(sql: object, connection: BaseDatabaseWrapper, written: frozenset[str]) -> None:
    """Pin to ``connection``'s alias if it is a primary and ``sql`` may write.

    Called by the write hook for each statement inside a PrimaryReplica block, with
    the pins in force (``written``).
    """
    alias = connection.alias
    if alias in written or alias not in PRIMARIES:
        return
    text = statement_text(sql, connection)
    if text is None or may_write(text, connection.vendor):
        PINS.set(written | {alias})
        if _switches.listening:
            _report_pin(alias)


def _report_pin(primary: str) -> None:
    """Send ``reads_pinned`` if an active block pins its reads to ``primary`` after a write."""
    for frame in frames():
        ask = frame[3]
        if type(ask) is Entry and ask.pin and ask.primary == primary:
            observe.reads_pinned.send_robust(sender=PrimaryReplica, primary=primary, reason="write")
            return


def read_primaries() -> bool:
    """Send the reads here to the primary until the innermost PrimaryReplica block exits.

    For the middleware's requests that read the primary: one ContextVar set, where a
    ``use_primary()`` scope costs five. Only where that block is the outermost (its
    exit then ends it); otherwise it does nothing and returns ``False``: enter
    ``use_primary()`` instead.
    """
    pins = PINS.get()
    entries = sum(type(frame[3]) is Entry for frame in frames())
    if pins is None or entries != 1:
        return False
    PINS.set(pins | EVERY_PRIMARY)
    return True


def written_positions(also: str | None = None) -> dict[str, Position]:
    """Where each primary this code wrote to in the active blocks stands now: a query each.

    The positions a client's next requests (the middleware's cookie) and the tasks
    enqueued here (their headers) need. A primary without positions gets
    :data:`PRIMARY_ONLY` (its reads go to it, as a time pin does): the innermost active
    block on it has ``pin="time"``, its backend has none (SQLite), the write is in a
    transaction not committed yet, or the query fails. A primary with no active block
    here (a tenant's, whose block has exited) is carried by position.

    Args:
        also: A primary to include though no write to it was seen here (the
            middleware's, after an unsafe request).
    """
    pins = PINS.get()
    primaries: set[str] = set() if pins is None else set(pins - EVERY_PRIMARY)
    if also is not None:
        primaries.add(also)
    positions: dict[str, Position] = {}
    for alias in sorted(primaries):
        wrapper = connection(alias)
        position: Position = PRIMARY_ONLY
        if _pin_mode(alias) == "position" and not wrapper.in_atomic_block:
            try:
                if supports(wrapper):
                    position = written(wrapper)
            except DatabaseError as error:
                logger.warning(
                    "dynroute: could not read the position of primary %r (%s): its reads are "
                    "pinned to it instead",
                    alias,
                    type(error).__name__,
                )
        positions[alias] = position
    return positions


def _pin_mode(primary: str) -> str:
    """The ``pin`` of the innermost active block on ``primary``; ``"position"`` if none."""
    for frame in frames():
        ask = frame[3]
        if type(ask) is Entry and ask.primary == primary:
            return ask.pin_mode
    return "position"


def positions_to_carry() -> dict[str, Position]:
    """What this code's work carries to later work: the positions it needs and wrote.

    For a task enqueued here: the positions the code was given (a client's cookie, the
    task's own headers), then those of its writes in the active blocks (a query each).
    Empty when there is nothing to carry.
    """
    needs = NEEDS.get()
    carried: dict[str, Position] = {} if needs is None else dict(needs)
    pins = PINS.get()
    if pins is not None and not pins <= EVERY_PRIMARY:
        carried.update(written_positions())
    return carried
