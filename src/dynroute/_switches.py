"""The switchboard: every process-wide switch of dynroute, and the blocks to re-arm.

A switch is a fact about the process that code on a hot path reads instead of looking
further: a route lock was set, a prevention scope entered, a signal has a receiver,
the write hook is installed.

A block checks, on its first entry, what every later entry would find the same (the
router is installed, its alias exists), then skips those checks. It must not skip
them once a feature is switched on that every entry has to consult: a route lock
(``dynroute.tenants``), a receiver of a signal (``dynroute.observe``). Features throw
their switch here, blocks read it here, and blocks that skip their checks are kept
here, to be re-armed when such a switch is thrown. So no feature imports the blocks,
and nothing here imports dynroute: this module is the floor of the house.

Each switch is a module attribute, read where it matters as ``_switches.name`` (one
attribute lookup), and set through its function below. Only :func:`listen` is ever
set back; the others stay on for the life of the process (see each).
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

__all__ = [
    "checks_needed",
    "enter_scopes",
    "hook_installed",
    "install_hook",
    "listen",
    "listening",
    "locks_used",
    "rearm",
    "scopes_entered",
    "skip_checks",
    "use_locks",
]

#: A route lock was set in this process: from then on every block entry checks the
#: lock in force. Never set back: a lock may live on in a context copied while it was
#: set.
locks_used = False

#: A ``prevent_writes()`` scope was entered in this process: from then on the router
#: looks for one on every write. Never set back, for the same reason.
scopes_entered = False

#: One of dynroute's signals has a receiver: blocks time and report their entries.
listening = False

#: The write hook is on every connection of the process, and on each one opened after.
hook_installed = False


class _Armed(Protocol):
    """A block whose next entry takes its checked path while ``_setup`` is true."""

    _setup: bool


#: Blocks that skip their checks; re-armed (and forgotten) when a switch is thrown.
_SKIPPING: weakref.WeakSet[_Armed] = weakref.WeakSet()
_LOCK = threading.Lock()


def checks_needed() -> bool:
    """Whether every block entry must take its checked path: a lock, or a receiver."""
    return locks_used or listening


def skip_checks(block: _Armed) -> None:
    """Let ``block`` skip its checks on entry until :func:`rearm`.

    Call after setting ``block._setup`` to false. If a switch was thrown meanwhile (by
    another thread, which re-armed the blocks before this one was among them), the
    block is re-armed at once.
    """
    with _LOCK:
        _SKIPPING.add(block)
    if checks_needed():
        block._setup = True  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - the flag the protocol names


def rearm() -> None:
    """Make every block take its checked path on its next entry."""
    with _LOCK:
        blocks = list(_SKIPPING)
        _SKIPPING.clear()
    for block in blocks:
        block._setup = True  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - the flag the protocol names


def use_locks() -> None:
    """Throw :data:`locks_used` (once): blocks check the route lock on every entry."""
    global locks_used  # noqa: PLW0603 - the switch this function throws
    if not locks_used:
        locks_used = True
        rearm()


def enter_scopes() -> None:
    """Throw :data:`scopes_entered`: the router looks for a prevention scope on writes."""
    global scopes_entered  # noqa: PLW0603 - the switch this function throws
    scopes_entered = True


def listen(on: bool) -> None:  # noqa: FBT001 - the switch's new position
    """Set :data:`listening`; when it changes, blocks take their checked entry once more.

    Set before the blocks are re-armed: a block entering meanwhile must not skip again.
    """
    global listening  # noqa: PLW0603 - the switch this function throws
    if on is not listening:
        listening = on
        rearm()


def install_hook() -> None:
    """Throw :data:`hook_installed`: the write hook is on every connection from now on."""
    global hook_installed  # noqa: PLW0603 - the switch this function throws
    hook_installed = True
