"""Counters of the dynroute variant, kept in files that ``bench/load.py`` reads.

Each event appends one byte to a file named after the event and the process
(``<stats_dir>/<event>.<pid>``), so the count is the files' total size, whatever the
number of workers, and survives a worker that is killed. The events are
``closed-<reason>``, one for each reason of ``configuration_closed``: ``eviction``
(over ``DYNROUTE_MAX_IDLE_CONNECTIONS``), ``last-block`` (teardown) and ``idle-close``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from dynroute.signals import configuration_closed
from loadsite.config import CONFIG

_files: dict[str, int] = {}
_lock = threading.Lock()


def _count(event: str) -> None:
    with _lock:
        descriptor = _files.get(event)
        if descriptor is None:
            path = Path(CONFIG["stats_dir"]) / f"{event}.{os.getpid()}"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _files[event] = descriptor
        os.write(descriptor, b".")


def _closed(*, reason: str, **_kwargs: Any) -> None:  # noqa: ANN401 - Django's signal arguments
    _count(f"closed-{reason.replace(' ', '-')}")


def connect() -> None:
    """Connect the counter (a strong reference: it lives as long as the process)."""
    configuration_closed.connect(_closed, weak=False, dispatch_uid="load-closed")
