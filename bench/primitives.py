"""Where the time of entering and leaving a block goes: the state primitives.

Run with any Python: ``python3 bench/primitives.py``. It times, in CPU time on one CPU,
what each package does to its route state per block entered and left, without the
rest of the ``with`` statement:

- dynroute: two ``ContextVar.get`` and two ``ContextVar.set`` (each ``set`` allocates
  a token and nodes of the context's map);
- django-dynamic-db-router 0.3.0, read-write block: two ``hasattr`` on a
  ``threading.local``, two appends and two pops on its lists (a read-only block also
  reads the enclosing write alias from the list).
"""

from __future__ import annotations

import contextvars
import gc
import os
import statistics
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ROUNDS, OPERATIONS = 101, 20_000
VAR: contextvars.ContextVar[object] = contextvars.ContextVar("route", default=None)
FRAME = (object(), "other", "other", None, None)
LOCAL = threading.local()
LOCAL.reads, LOCAL.writes = ["default"], ["default"]


def dynroute_sets(n: int) -> None:
    set_frame = VAR.set
    for _ in range(n):
        set_frame(FRAME)
        set_frame(None)


def dynroute_gets(n: int) -> None:
    get_frame = VAR.get
    for _ in range(n):
        get_frame()
        get_frame()


def original_read_write(n: int) -> None:
    for _ in range(n):
        hasattr(LOCAL, "reads")
        hasattr(LOCAL, "writes")
        LOCAL.reads.append("other")
        LOCAL.writes.append("other")
        LOCAL.reads.pop()
        LOCAL.writes.pop()


def original_read_only(n: int) -> None:
    for _ in range(n):
        hasattr(LOCAL, "reads")
        hasattr(LOCAL, "writes")
        LOCAL.reads.append("other")
        LOCAL.writes.append(LOCAL.writes[-1])
        LOCAL.reads.pop()
        LOCAL.writes.pop()


def loop_only(n: int) -> None:
    for _ in range(n):
        pass


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    cases: dict[str, Callable[[int], None]] = {
        "dynroute: 2 x ContextVar.set": dynroute_sets,
        "dynroute: 2 x ContextVar.get": dynroute_gets,
        "original, read-write: thread-local list work": original_read_write,
        "original, read-only: thread-local list work": original_read_only,
        "loop": loop_only,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    gc.disable()
    for _ in range(ROUNDS):
        for name, case in cases.items():
            start = time.process_time_ns()
            case(OPERATIONS)
            samples[name].append((time.process_time_ns() - start) / OPERATIONS)
    loop = statistics.median(samples.pop("loop"))
    for name, values in samples.items():
        print(f"{name:46} {statistics.median(values) - loop:5.0f} ns per block")


if __name__ == "__main__":
    main()
