"""Read-your-writes in Celery tasks: a task reads what the code that enqueued it wrote.

Add the app; nothing else changes (no task's signature, no call)::

    INSTALLED_APPS = [..., "dynroute", "dynroute.contrib.celery"]

When a task is published (``delay()``, ``apply_async()``, a chain's next task), the
pins of the code that enqueues it go into the message's headers: the positions it was
given (a request's cookie, its own task's headers) and those of its writes in the
active ``PrimaryReplica`` blocks (one query per primary written). In the worker, the
``PrimaryReplica`` blocks the task enters read a replica only once it has replayed
those positions, else the primary (always the primary for a primary without
positions: SQLite, ``pin="time"``). A task published outside any block, or after no
write, carries nothing.

The header, ``headers["dynroute"] = {"v": 1, "positions": "<base64url of JSON>"}``,
holds aliases and positions only. A worker ignores a malformed header with a warning,
and one of a version it does not read with a warning once per version: upgrade the
workers before the code that enqueues.

Eager tasks (``task_always_eager``, ``apply()``) are not published: they run in the
caller's context, whose pins already apply. Celery is needed: without it, importing
this package raises an ``ImportError`` that says so.
"""

from __future__ import annotations

from dynroute.contrib.celery._pins import HEADER, VERSION

__all__ = ["HEADER", "VERSION"]
