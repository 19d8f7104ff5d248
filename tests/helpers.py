"""Small helpers shared by test modules."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


def cancel_once_ready(victim: Callable[[asyncio.Event], Coroutine[object, object, None]]) -> None:
    """Run ``victim(ready)`` as a task, cancel it once it sets ``ready``, expect it to stop."""

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(victim(ready))
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def wait_until(condition: Callable[[], bool], what: str, *, seconds: float = 30) -> None:
    """Poll ``condition`` until it holds; fail the test, naming ``what``, after ``seconds``.

    For waiting on another thread's progress without a sleep that decides the outcome:
    the bound only stops a test that would otherwise hang.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.001)


class WatchedLock:
    """A re-entrant lock that records when a thread has to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:  # noqa: FBT001, FBT002 - the Lock signature
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> NoReturn:
    """Skip the test because ``what`` is missing here; on CI (``CI=true``), fail instead."""
    if ON_CI:
        pytest.fail(f"CI=true and {what}")
    note_skipped(what)
    pytest.skip(f"{what} (set CI=true to make this an error)")


def note_skipped(what: str) -> None:
    """Add ``what`` to the run's list of suites skipped for a missing piece.

    ``nox`` sets ``DYNROUTE_SKIPPED`` to a file, and prints its lines, once each, in a
    summary at the end of the run.
    """
    log = os.environ.get("DYNROUTE_SKIPPED")
    if log:
        with open(log, "a", encoding="utf-8") as file:  # noqa: PTH123 - one line appended
            file.write(f"{what}\n")
