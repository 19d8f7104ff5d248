"""The signals dynroute sends (public in :mod:`dynroute.signals`), and what sends them.

Nothing here runs on a block's entry or exit until a receiver is connected to one of
dynroute's signals (the switch ``_switches.listening``): connecting the first one makes
every block take its checked entry once more (as a route lock does), where it starts
sending.
Receivers are called synchronously, in the thread or task the event happens in, by
``send_robust``: a receiver that raises is logged by Django (logger
``django.dispatch``) and changes nothing for the block, whose route is in force or
restored either way.

A block's entries are timed in a ContextVar holding a linked list of
``(block, start, depth, enclosing)``, pushed on entry only while something listens
and popped on exit whenever one is there: an entry timed before the last receiver
went is still closed properly.
"""

from __future__ import annotations

import threading
import time
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from django.dispatch import Signal

from dynroute import _switches
from dynroute.core import frames, iscoroutinefunction
from dynroute.exceptions import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

__all__ = [
    "CloseReason",
    "DynrouteSignal",
    "block_entered",
    "block_exited",
    "configuration_closed",
    "configuration_registered",
    "entered",
    "exited",
    "get_timing",
    "reads_pinned",
    "replica_marked_down",
    "replica_restored",
]

CloseReason: TypeAlias = Literal["last block", "eviction", "idle close"]
"""Why a runtime configuration was closed: the ``reason`` of :data:`configuration_closed`."""


class DynrouteSignal(Signal):
    """A Django signal that tells dynroute when it gains or loses its receivers."""

    def connect(
        self,
        receiver: Callable[..., Any],
        sender: object | None = None,
        weak: bool = True,  # noqa: FBT001, FBT002 - Django's signature
        dispatch_uid: Hashable | None = None,
    ) -> None:
        """Connect ``receiver``, as Django's ``Signal.connect``; a plain function only.

        Raises:
            UsageError: ``receiver`` is a coroutine function. dynroute sends from
                inside the ORM's calls, synchronously, in sync and async code alike.
        """
        if iscoroutinefunction(receiver):  # asgiref's test, as Django's signals use
            msg = (
                f"dynroute's signals call their receivers synchronously, where the event "
                f"happens (inside a query's call path, in sync and async code): connect a "
                f"plain function, not the coroutine function {receiver!r}."
            )
            raise UsageError(msg)
        super().connect(receiver, sender, weak, dispatch_uid)
        if weak:
            # Django only marks the signal when a weak receiver is collected (by a
            # method whose name changed in Django 6.0): note it, so that the next
            # report recomputes the switch and blocks stop reporting to nobody.
            weakref.finalize(getattr(receiver, "__self__", receiver), _note_collected)
        _update()

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: object | None = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect ``receiver``, as Django's ``Signal.disconnect``."""
        done = super().disconnect(receiver, sender, dispatch_uid)
        _update()
        return done


block_entered = DynrouteSignal()
"""Sent when a block is entered, after its route is in force: ``block`` (the
:class:`~dynroute.InDatabase`), ``route`` (its :class:`~dynroute.Route`),
``depth`` (1 for the outermost block here). Sender: the block's class."""
block_exited = DynrouteSignal()
"""Sent when a block is left, after the enclosing route is restored: ``block``,
``route``, ``depth`` and ``duration`` (seconds since its entry, a float)."""
configuration_registered = DynrouteSignal()
"""Sent when a runtime configuration is registered: ``alias``, ``engine``, ``name``
and ``host`` (its ``ENGINE``, ``NAME`` and ``HOST`` settings: never ``PASSWORD`` or
``OPTIONS``) and ``reuse`` (whether its connections are kept for the next block).
Sender: :class:`~dynroute.DatabaseConfiguration`."""
configuration_closed = DynrouteSignal()
"""Sent when a runtime configuration is closed and unregistered: ``alias`` and
``reason``, one of ``"last block"`` (its last block left, in teardown mode or after a
failed connection), ``"eviction"`` (over ``DYNROUTE_MAX_IDLE_CONNECTIONS``) or
``"idle close"`` (:func:`~dynroute.close_idle_connections`)."""
replica_marked_down = DynrouteSignal()
"""Sent when a replica fails to connect and is skipped: ``alias``, ``seconds`` (how
long it is skipped), ``error`` (the exception's class name, not its message).
Sender: :class:`~dynroute.PrimaryReplica`."""
replica_restored = DynrouteSignal()
"""Sent when a replica marked down connects again: ``alias``."""
reads_pinned = DynrouteSignal()
"""Sent when reads go to a primary because of a write: ``primary`` and ``reason``:
``"write"`` (the first write to it in an active block with ``pin_after_write``),
``"cookie"`` (the client wrote within the middleware's ``pin_seconds``, a time pin), or
``"position"`` (a block's reads need a position no replica has replayed yet)."""
replica_lagging = DynrouteSignal()
"""Sent when a replica is found further behind than its policy's ``max_lag``, and so
not chosen: ``alias`` and ``lag`` (seconds, a float; ``inf`` when its replication is
stopped with transactions waiting). Sender: :class:`~dynroute.PrimaryReplica`."""
replica_caught_up = DynrouteSignal()
"""Sent when a replica found lagging is back within ``max_lag``: ``alias``, ``lag``."""


class _PlainSignal(Signal):
    """A Django signal that blocks do not watch: a receiver switches nothing on."""


database_started = _PlainSignal()
"""Sent (in the process that runs the command or the fan-out) when work starts on one
database of the directory: ``name`` (its name in ``DYNROUTE_DATABASES``) and
``operation`` (``"migrate"``, ``"showmigrations"``, ``"run"``, ``"each"``). A plain
Django signal, sent robustly (a receiver that raises is logged): a receiver costs
blocks nothing. Sender: ``None``."""
database_finished = _PlainSignal()
"""Sent when that work ends: ``name``, ``operation``, ``status`` (``"migrated"``,
``"up to date"``, ``"behind"``, ``"done"``, ``"failed"``, ``"not run"``), ``error`` (the
error's class and message, secrets masked; empty unless it failed), ``seconds``."""

_ALL = (
    block_entered,
    block_exited,
    configuration_registered,
    configuration_closed,
    replica_marked_down,
    replica_restored,
    reads_pinned,
    replica_lagging,
    replica_caught_up,
)


#: Whether a weakly connected receiver was collected since the switch was last set.
_collected = False
_UPDATE_LOCK = threading.Lock()


def _note_collected() -> None:
    """A weakly connected receiver was collected (a finalizer: sets a flag, no lock)."""
    global _collected  # noqa: PLW0603 - read by entered()
    _collected = True


def _update() -> None:
    """Set the switch ``_switches.listening``: whether any signal has a live receiver."""
    global _collected  # noqa: PLW0603 - read by entered(), set here and by the finalizer
    with _UPDATE_LOCK:
        _collected = False
        # Blocks take their checked entry once more when it changes: to start
        # reporting, or to go back to skipping it.
        _switches.listen(any(_live(signal) for signal in _ALL))


def _live(signal: Signal) -> bool:
    """Whether ``signal`` has a receiver that was not collected."""
    with signal.lock:
        # Private, as connect() and send() use it; django-stubs does not declare it.
        signal._clear_dead_receivers()  # type: ignore[attr-defined]  # noqa: SLF001
        return bool(signal.receivers)


#: ``(block, start, depth, enclosing)``: the entries timed in this thread or task.
_Timing: TypeAlias = "tuple[object, float, int, _Timing | None]"
_TIMING: ContextVar[_Timing | None] = ContextVar("dynroute_timing", default=None)
#: The clock of durations (a module global, so that tests can replace it).
_clock = time.perf_counter

#: The timed entries here (``None``: none; a block's exit then has nothing to send).
get_timing = _TIMING.get


def entered(block: Any) -> None:  # noqa: ANN401 - an InDatabase (this module is below _block)
    """Time ``block``'s entry, whose frame was just pushed, and send :data:`block_entered`."""
    if _collected:
        _update()  # a receiver was collected: maybe none is left
    depth = sum(1 for _ in frames())
    _TIMING.set((block, _clock(), depth, _TIMING.get()))
    block_entered.send_robust(sender=type(block), block=block, route=block.route, depth=depth)


def exited(block: Any) -> None:  # noqa: ANN401 - an InDatabase
    """Send :data:`block_exited` for ``block``'s innermost timed entry, if it was timed.

    Entries timed above it are of blocks dropped with it (see ``InDatabase._release``):
    forgotten.
    """
    timing = _TIMING.get()
    while timing is not None and timing[0] is not block:
        timing = timing[3]
    if timing is None:
        return  # entered before anything listened
    _TIMING.set(timing[3])
    duration = _clock() - timing[1]
    block_exited.send_robust(
        sender=type(block), block=block, route=block.route, depth=timing[2], duration=duration
    )
