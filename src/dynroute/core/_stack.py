"""The route stack: which blocks are active in the current thread or task.

The stack lives in a ContextVar, so each thread and each asyncio task has its own,
and it follows the code into ``sync_to_async``, the async ORM and ``copy_context()``
(DJANGO_NOTES §5). It is an immutable linked list: entering a block sets the variable
to a new frame whose ``parent`` is the old top; leaving sets it back to the parent. A
frame is never changed, so a child task that inherited the stack cannot see or undo
what its parent does next.

The router runs on every query, so each frame carries its answers precomputed: for
the built-in strategies, the alias each direction resolves to, already falling back
through the enclosing frames. Only a custom policy, whose answer depends on the model
and hints, is asked per query (its frame holds :data:`ASK`).
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

from dynroute.exceptions import RouteStateError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.db.models import Model

    from dynroute.core._policies import RoutingPolicy

__all__ = [
    "ASK",
    "CURRENT",
    "Answer",
    "Frame",
    "frames",
    "get_frame",
    "pop",
    "push",
    "set_frame",
    "walk",
]


class _Ask(enum.Enum):
    ASK = enum.auto()


#: A frame's answer for a direction when its policy must be asked per query.
ASK: Final = _Ask.ASK

#: What a frame knows in advance about one direction: an alias, ``None`` (no opinion
#: anywhere below), or :data:`ASK`.
Answer: TypeAlias = "str | _Ask | None"


#: One active entry of a block: ``(owner, read, write, ask, parent)``.
#:
#: - ``owner``: the block object that entered (checked when it is left);
#: - ``read``/``write``: the answer for each direction, precomputed (see above);
#: - ``ask``: the custom policy to ask per query, or ``None``;
#: - ``parent``: the frame of the enclosing block, or ``None``.
#:
#: A plain tuple: entering a block is on the path of every request, and a tuple is
#: the cheapest immutable record Python builds (a class or named tuple costs 20x).
#: Leaving sets the parent back: keeping each entry's token for a ``reset`` costs
#: about what the ``reset`` saves.
Frame: TypeAlias = "tuple[object, Answer, Answer, RoutingPolicy | None, Frame | None]"


CURRENT: ContextVar[Frame | None] = ContextVar("dynroute_route", default=None)
# Bound once: the hot paths (here and in InDatabase.__enter__/__exit__) call them
# without an attribute lookup.
get_frame = CURRENT.get
set_frame = CURRENT.set


def frames() -> Iterator[Frame]:
    """The frames of the blocks active here, innermost first: the one walk of the stack.

    Everything that looks down the stack (for the depth of a block, the innermost
    block of a kind, the blocks a request entered) walks it with this. Only
    :func:`walk`, which the router runs per query for a custom policy, keeps a loop of
    its own.
    """
    frame = get_frame()
    while frame is not None:
        yield frame
        frame = frame[4]


def push(owner: object, read: Answer, write: Answer, ask: RoutingPolicy | None) -> None:
    """Enter a block: make a frame for ``owner`` the top of the stack.

    Args:
        owner: The block being entered; :func:`pop` checks it.
        read: The block's own answer for reads: an alias, ``None`` to defer to the
            enclosing blocks, or :data:`ASK` to ask ``ask`` per query.
        write: The same for writes.
        ask: The policy to ask per query, for a custom policy; else ``None``.
    """
    parent = get_frame()
    if parent is not None:
        # A direction this block leaves open resolves as the enclosing block's does;
        # an ASK there stays an ASK here, resolved per query by walking the frames.
        if read is None:
            read = parent[1]
        if write is None:
            write = parent[2]
    set_frame((owner, read, write, ask, parent))


def pop(owner: object) -> list[object]:
    """Leave a block: restore the stack to what it was before ``owner`` was entered.

    The frame of ``owner`` is normally the top. If blocks entered after it were never
    left (a generator suspended inside a block, then abandoned), they are dropped with
    it, as ``ContextVar.reset`` would drop them, and their owners are returned so that
    what they set up can be released.

    Returns:
        The owners of the frames dropped above ``owner``'s, innermost first; usually
        none.

    Raises:
        RouteStateError: ``owner`` has no frame in this context: it was entered in
            another thread or task, or left twice, or dropped when an enclosing block
            was left first.
    """
    dropped: list[object] = []
    for frame in frames():
        if frame[0] is owner:
            set_frame(frame[4])
            return dropped
        dropped.append(frame[0])
    msg = (
        f"{owner!r} was left without being active here: a block must be left in the "
        "thread or task that entered it, once per entry, innermost first."
    )
    raise RouteStateError(msg)


def walk(
    frame: Frame | None, model: type[Model], hints: dict[str, Any], *, write: bool
) -> str | None:
    """Resolve a direction through the frames, asking custom policies on the way.

    A loop of its own, not :func:`frames`: it runs on every query of a custom policy's
    block, and starts from the frame the router already holds.
    """
    while frame is not None:
        _, read, written, policy, parent = frame
        answer = written if write else read
        if answer is not ASK:
            return answer
        if policy is not None:
            method = policy.db_for_write if write else policy.db_for_read
            chosen: object = method(model, **hints)
            # Django reads a falsy answer as "no opinion"; so does the block stack.
            if chosen:
                if type(chosen) is not str:
                    _bad_answer(policy, method.__name__, chosen)
                return chosen
        frame = parent
    return None


def _bad_answer(policy: object, method: str, answer: object) -> NoReturn:
    msg = (
        f"{type(policy).__name__}.{method}() returned a value of type {type(answer).__name__}; "
        "a routing policy returns a database alias (str), or None for no opinion."
    )
    raise UsageError(msg)
