"""The receivers that carry the pins of the code that enqueues a task into the task.

- ``before_task_publish`` (in the publishing process): what the enqueuing code must
  carry (:func:`dynroute.replicas.positions_to_carry`: the positions it was given, and
  those of its writes in active ``PrimaryReplica`` blocks) and its route (by name,
  :mod:`._routes`) go into the message's headers, as
  ``headers["dynroute"] = {"v": 1, "positions": pack(...), "route": {...}}``, each key
  only when there is something to carry; nothing at all when neither is.
- ``task_prerun`` / ``task_postrun`` (in the worker, in the thread that runs the task):
  the task runs inside blocks on the header's route, and the header's positions are
  needed by the ``PrimaryReplica`` blocks it enters (:class:`dynroute.replicas.Needing`);
  both are undone after it.

A header is read from the task's request: Celery (5.x, protocol 2) gives a message's
custom headers as ``task.request.headers``, and each also as an attribute of the
request; ``task.apply(headers=...)`` gives only the former. Nothing in a header is
trusted: a malformed one is ignored with a warning, one of a version this code does
not read is ignored with a warning once per version and process.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from django.core.exceptions import SynchronousOnlyOperation

from dynroute.contrib.celery._routes import enter_route, route_to_carry
from dynroute.replicas import Needing, pack, positions_to_carry, unpack

try:
    from celery import signals  # type: ignore[import-untyped] # Celery ships no types
except ModuleNotFoundError as error:
    if (error.name or "").split(".", 1)[0] != "celery":
        raise  # Celery is there, and fails for another reason
    msg = "dynroute.contrib.celery needs Celery: install it with `pip install celery`."
    raise ImportError(msg, name=error.name) from error

if TYPE_CHECKING:
    from collections.abc import Callable

    from dynroute.routing import InDatabase

__all__ = ["HEADER", "VERSION", "apply_pins", "carry_pins", "connect", "disconnect", "drop_pins"]

logger = logging.getLogger("dynroute")

#: The key of the header, in a message's headers.
HEADER: Final = "dynroute"
#: The version of the header's format this code writes and reads.
VERSION: Final = 1

_DISPATCH_UID: Final = "dynroute.contrib.celery"
#: How many versions a process warns about, at most (a header is not trusted: a
#: producer sending a new version per message must not grow a set without bound).
_MAX_WARNED: Final = 16

#: The ``Needing`` entered for each task running in this process, by the identity of
#: its request, until it ends. Keyed by request, not by task id: the same id may run
#: twice at once (a message delivered again, in a pool of threads), and an eager
#: ``apply()`` inside a task runs between its prerun and its postrun; each run has a
#: request of its own, the same object in both signals. The pins themselves are in a
#: ContextVar (``Needing``), reset in the thread and context that set them.
_ACTIVE: dict[int, tuple[list[InDatabase[Any]], Needing | None]] = {}
#: The unknown versions warned about in this process.
_WARNED: set[str] = set()


class _Task(Protocol):
    """What the receivers read of a Celery task (Celery ships no types)."""

    @property
    def name(self) -> str:
        """The task's registered name."""
        ...

    @property
    def request(self) -> object:
        """The context of the run in progress (``celery.app.task.Context``)."""
        ...


def carry_pins(
    *,
    sender: object = None,
    headers: dict[str, object] | None = None,
    **kwargs: object,  # noqa: ARG001 - a signal receiver
) -> None:
    """``before_task_publish``: put what the enqueuing code must carry in ``headers``."""
    if headers is None:
        return
    try:
        carried = positions_to_carry()
    except SynchronousOnlyOperation:
        carried = None
        # Reading a primary's position is a query, which Django refuses in an event
        # loop's thread; the task is published all the same.
        logger.warning(
            "dynroute: task %s was enqueued from async code after a write, where a "
            "primary's position cannot be read: it carries no pin, and may read a replica "
            "that has not replayed the write. Enqueue it with "
            "`await sync_to_async(task.delay)(...)`.",
            sender,
        )
    header: dict[str, object] = {"v": VERSION}
    if carried:
        header["positions"] = pack(carried)
    route = route_to_carry(sender)
    if route is not None:
        header["route"] = route
    if len(header) > 1:
        headers[HEADER] = header


def apply_pins(*, task: _Task, task_id: object = None, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    """``task_prerun``: make the task's PrimaryReplica blocks need its header's positions."""
    request = task.request
    header = _header(request)
    fields = _read(header, task.name, task_id)
    if fields is None:
        return
    blocks = enter_route(fields.get("route"), task.name)
    needs = unpack(fields["positions"]) if "positions" in fields else None
    needing = None
    if needs:
        needing = Needing(needs)
        needing.__enter__()
    if blocks or needing is not None:
        _ACTIVE[id(request)] = (blocks, needing)


def drop_pins(*, task: _Task, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    """``task_postrun``: what the task's header needed is needed no longer."""
    entered = _ACTIVE.pop(id(task.request), None)
    if entered is None:
        return
    blocks, needing = entered
    if needing is not None:
        needing.__exit__(None, None, None)
    for block in reversed(blocks):
        block.__exit__(None, None, None)


class _Signal(Protocol):
    """What the receivers use of a Celery signal (``celery.utils.dispatch.Signal``)."""

    def connect(
        self, receiver: Callable[..., None], *, dispatch_uid: str, weak: bool
    ) -> object:  # the receiver, or a decorator when given none
        """Connect ``receiver``, unless one is connected with this ``dispatch_uid``."""
        ...

    def disconnect(self, receiver: Callable[..., None], *, dispatch_uid: str) -> bool:
        """Disconnect the receiver connected with ``dispatch_uid``; say if there was one."""
        ...


#: Each signal and the receiver connected to it.
_RECEIVERS: Final = (
    (cast("_Signal", signals.before_task_publish), carry_pins),
    (cast("_Signal", signals.task_prerun), apply_pins),
    (cast("_Signal", signals.task_postrun), drop_pins),
)


def connect() -> None:
    """Connect the receivers (again: each is connected once)."""
    for signal, receiver in _RECEIVERS:
        # Held strongly: a module's functions live as long as it does anyway.
        signal.connect(receiver, dispatch_uid=_DISPATCH_UID, weak=False)


def disconnect() -> None:
    """Disconnect the receivers (for tests: Django has no way to remove an app)."""
    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=_DISPATCH_UID)


def _header(request: object) -> object:
    """The header in the task's request, or ``None``."""
    headers = getattr(request, "headers", None)
    if isinstance(headers, dict) and HEADER in headers:
        return cast("dict[object, object]", headers)[HEADER]
    return getattr(request, HEADER, None)


def _read(header: object, name: str, task_id: object) -> dict[object, object] | None:
    """The header's fields; ``None`` (and a warning) if it is not a header we read."""
    if header is None:
        return None
    kind = type(header).__name__  # before isinstance() narrows it to an unknown dict
    fields = cast("dict[object, object]", header) if isinstance(header, dict) else {}
    version = fields.get("v")
    if type(version) is int and version != VERSION:
        _unknown_version(version, name, task_id)
        return None
    well_formed = (
        type(version) is int
        and ("positions" in fields or "route" in fields)
        and ("positions" not in fields or unpack(fields["positions"]) is not None)
        and isinstance(fields.get("route", {}), dict)
    )
    if not well_formed:
        logger.warning(
            "dynroute: task %s[%s] has a malformed %r header (a %s), ignored: it gets no pin "
            "and no route from the code that enqueued it. dynroute writes "
            '{"v": %d, "positions": ..., "route": ...}.',
            name,
            task_id,
            HEADER,
            kind,
            VERSION,
        )
        return None
    return fields


def _unknown_version(version: int, name: str, task_id: object) -> None:
    """Warn, once per version and process, of a header this code cannot read."""
    key = str(version)[:20]
    if key in _WARNED or len(_WARNED) >= _MAX_WARNED:
        return
    _WARNED.add(key)
    logger.warning(
        "dynroute: task %s[%s] carries its pins in version %s of the %r header, which this "
        "dynroute does not read (it reads version %d): they are ignored, in this task and "
        "in later ones, without another warning. Upgrade dynroute on the workers.",
        name,
        task_id,
        key,
        HEADER,
        VERSION,
    )
