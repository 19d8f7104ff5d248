"""The enqueuing code's route, carried into its tasks by name.

At publish, the route in force where the task is enqueued (the innermost blocks'
answers for reads and for writes) is written as names: an alias of
``settings.DATABASES`` as ``{"alias": ...}``, a runtime configuration as its name in
the directory (``DYNROUTE_DATABASES``) as ``{"name": ...}``. A settings dict never
travels: a runtime configuration the directory does not name cannot be carried, and
the task is refused: an ERROR is logged where it is enqueued, and the task fails at
its first query in the worker with the same message (a receiver of Celery's
``before_task_publish`` cannot stop the publishing: Celery logs what it raises).

In the worker, the task runs inside blocks on the same databases, entered before it
starts and left after it ends. Only a route the innermost block fixes is carried: a
task enqueued where a policy decides per query (inside a ``PrimaryReplica`` block,
without a tenant's block inside it) carries its positions, not a route, and enters
its own blocks as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, cast

from django.conf import settings

from dynroute.core import ASK, get_frame
from dynroute.exceptions import (
    ConfigurationError,
    DynrouteError,
    RouteNotCarriedError,
    UnknownDatabaseError,
)
from dynroute.routing import InDatabase, in_database
from dynroute.tenants import current_directory, database_named, reloaded_directory

if TYPE_CHECKING:
    from django.db.models import Model

    from dynroute.core import TargetLike

__all__ = ["enter_route", "route_to_carry"]

logger = logging.getLogger("dynroute")

_DIRECTIONS: Final = ("read", "write")


def route_to_carry(task_name: object) -> dict[str, object] | None:
    """The route to write in a task's headers: by direction, a name or an alias.

    Returns:
        ``None`` outside any block (or where every direction is left to a policy);
        ``{"refused": message}`` for a route that cannot be named (logged as an error).
    """
    frame = get_frame()
    if frame is None or frame[3] is not None:
        # Outside blocks, or in one whose policy is asked per query (PrimaryReplica's
        # reads): the task decides (its positions are carried by _pins).
        return None
    carried: dict[str, object] = {}
    for direction, answer in zip(_DIRECTIONS, (frame[1], frame[2]), strict=True):
        if answer is None or answer is ASK:
            continue
        try:
            carried[direction] = _named(str(answer))
        except Exception as error:  # noqa: BLE001 - any failure refuses the task, loudly
            reason = (
                str(error)
                if isinstance(error, RouteNotCarriedError)
                else (f"its route could not be named ({type(error).__name__}: {error})")
            )
            logger.error("dynroute: task %s is refused: %s", task_name, reason)  # noqa: TRY400 - the message is the point, not the stack
            return {"refused": reason}
    return carried or None


def _named(alias: str) -> dict[str, str]:
    """How a worker finds ``alias``'s database: its settings alias, or its directory name.

    Raises:
        RouteNotCarriedError: A runtime configuration the directory does not name.
    """
    if alias in settings.DATABASES:
        return {"alias": alias}
    for fresh in (False, True):  # the cached directory, then read again (kept)
        try:
            entries = reloaded_directory() if fresh else current_directory()
        except ConfigurationError:
            break
        name = entries.name_of(alias)
        if name is not None:
            return {"name": name}
    msg = (
        f"it is enqueued inside a block on the runtime configuration {alias!r}, which "
        "settings.DYNROUTE_DATABASES does not name: its settings cannot travel to a "
        "worker. Add the database to the directory, or enqueue the task outside the block."
    )
    raise RouteNotCarriedError(msg)


def enter_route(carried: object, task_name: str) -> list[InDatabase[Any]]:
    """Enter blocks routing as the header says; the blocks entered, to leave after the task.

    A header that cannot be followed (a name the directory no longer has, a refused
    route) enters a block whose every query raises, with the reason: the task fails
    rather than run on another database.
    """
    if not isinstance(carried, dict):
        return []
    fields = cast("dict[str, object]", carried)
    try:
        refused = fields.get("refused")
        if refused is not None:
            raise RouteNotCarriedError(str(refused))
        targets = {d: _target(fields[d]) for d in _DIRECTIONS if d in fields}
    except DynrouteError as error:
        message = f"task {task_name} cannot run where it was enqueued: {error}"
        logger.error("dynroute: %s", message)  # noqa: TRY400
        return [_enter(in_database(policy=_Refusing(message)))]
    read, write = targets.get("read"), targets.get("write")
    if read is not None and read == write:
        wanted = [in_database(read, read=True, write=True)]
    else:
        wanted = [
            *([in_database(write, read=False, write=True)] if write is not None else []),
            *([in_database(read, read=True, write=False)] if read is not None else []),
        ]
    blocks: list[InDatabase[Any]] = []
    try:
        for block in wanted:
            blocks.append(_enter(block))  # noqa: PERF401 - entered one by one, to undo on failure
    except Exception as error:  # noqa: BLE001 - a database down: the task fails, the worker goes on
        for block in reversed(blocks):  # nothing entered stays entered for later tasks
            block.__exit__(None, None, None)
        message = f"task {task_name} cannot enter its route: {type(error).__name__}: {error}"
        logger.error("dynroute: %s", message)  # noqa: TRY400
        return [_enter(in_database(policy=_Refusing(message)))]
    return blocks


def _target(field: object) -> TargetLike:
    """The target a header's direction names.

    Raises:
        RouteNotCarriedError: It names nothing this process knows.
    """
    fields = cast("dict[str, object]", field) if isinstance(field, dict) else {}
    alias, name = fields.get("alias"), fields.get("name")
    if isinstance(alias, str) and alias in settings.DATABASES:
        return alias
    if isinstance(name, str):
        try:
            return database_named(name)
        except UnknownDatabaseError:
            pass
    msg = f"its header names {field!r}, which is neither in DATABASES nor in the directory"
    raise RouteNotCarriedError(msg)


def _enter(block: InDatabase[Any]) -> InDatabase[Any]:
    block.__enter__()
    return block


class _Refusing:
    """A policy whose every query raises: for a task whose route cannot be followed."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        self._message = message

    def db_for_read(self, model: type[Model], /, **hints: object) -> str | None:  # noqa: ARG002 - a policy's signature
        """Raise: the task must not read another database than its enqueuer's."""
        raise RouteNotCarriedError(self._message)

    def db_for_write(self, model: type[Model], /, **hints: object) -> str | None:  # noqa: ARG002
        """Raise: the task must not write another database than its enqueuer's."""
        raise RouteNotCarriedError(self._message)
