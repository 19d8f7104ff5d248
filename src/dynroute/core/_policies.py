"""Routing policies: what a block decides for each query.

A policy answers Django's two routing questions for the queries made inside an
``in_database`` block. The built-in strategies send one direction or both to a single
target; any object with the two methods of :class:`RoutingPolicy` can be used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, final

from dynroute.core._targets import DatabaseTarget, TargetLike, to_target
from dynroute.exceptions import DynrouteError

if TYPE_CHECKING:
    from django.db.models import Model
    from typing_extensions import Unpack  # Unpack of a TypedDict for **kwargs: PEP 692

__all__ = [
    "ReadOnly",
    "ReadWrite",
    "RoutingHints",
    "RoutingPolicy",
    "WriteOnly",
    "fixed_answers",
    "strategy_for",
]


class RoutingHints(TypedDict, total=False):
    """The hints Django passes a router's ``db_for_read`` and ``db_for_write``."""

    #: The object being read through a relation or saved, when there is one.
    instance: Model


class RoutingPolicy(Protocol):
    """Decides which database the reads and the writes of a block go to.

    The two methods mirror Django's database routers and are called with the same
    arguments, on every query made inside ``in_database(policy=...)``:

    - ``db_for_read(model, **hints)`` returns the alias reads of ``model`` go to;
    - ``db_for_write(model, **hints)`` returns the alias writes of ``model`` go to.

    Either may return ``None``, meaning "no opinion": the enclosing block decides, and
    outside all blocks Django's usual rules do (the routers after dynroute's, the
    instance's own database, then ``"default"``). ``hints`` are Django's router hints,
    for example ``instance`` when an object is saved.

    A policy is any object with these two methods; it need not inherit from anything.
    Any Django database router is one, as Django's documentation writes them
    (``def db_for_read(self, model, **hints)``, annotated or not), and so is the
    positional-only form ``(self, model, /, **hints)``. It runs on every query, so it
    should be cheap and must not query a database.
    """

    # ``**hints`` is typed by its keys, not as ``**hints: Any``: a method taking any
    # keyword could be called with ``model=``, which would make Django's own form,
    # where ``model`` is not positional-only, incompatible for mypy.
    def db_for_read(self, model: type[Model], /, **hints: Unpack[RoutingHints]) -> str | None:
        """Return the alias reads of ``model`` go to, or ``None`` for no opinion."""
        ...

    def db_for_write(self, model: type[Model], /, **hints: Unpack[RoutingHints]) -> str | None:
        """Return the alias writes of ``model`` go to, or ``None`` for no opinion."""
        ...


@dataclass(frozen=True, slots=True, init=False)
class _TargetPolicy:
    """Routes reads, writes, both or neither to one target, whatever the model."""

    target: DatabaseTarget
    reads: ClassVar[bool] = False
    writes: ClassVar[bool] = False

    def __init__(self, target: TargetLike, /) -> None:
        """Route to ``target``: an alias, a settings-style dict, or a target.

        Raises:
            InvalidTargetError: ``target`` is not one of these.
        """
        try:
            normalised = to_target(target)
        except DynrouteError as error:
            del target  # may hold a password: keep it out of traceback frame locals
            raise error.with_traceback(None) from None
        object.__setattr__(self, "target", normalised)

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ARG002, ANN401 - a policy's signature is fixed by the Protocol
        """Return the target's alias if this strategy routes reads, else ``None``."""
        return self.target.alias if self.reads else None

    def db_for_write(self, model: type[Model], /, **hints: Any) -> str | None:  # noqa: ARG002, ANN401 - a policy's signature is fixed by the Protocol
        """Return the target's alias if this strategy routes writes, else ``None``."""
        return self.target.alias if self.writes else None


@final
class ReadOnly(_TargetPolicy):
    """Send reads to the target; writes follow the enclosing block.

    ``in_database(target)`` is ``in_database(policy=ReadOnly(target))``.
    """

    __slots__ = ()
    reads = True


@final
class ReadWrite(_TargetPolicy):
    """Send reads and writes to the target.

    ``in_database(target, write=True)`` is ``in_database(policy=ReadWrite(target))``.
    """

    __slots__ = ()
    reads = True
    writes = True


@final
class WriteOnly(_TargetPolicy):
    """Send writes to the target; reads follow the enclosing block.

    ``in_database(target, read=False, write=True)`` is
    ``in_database(policy=WriteOnly(target))``.
    """

    __slots__ = ()
    writes = True


@final
class _Unrouted(_TargetPolicy):
    """Route nothing: the block only makes its target available (``route.alias``)."""

    __slots__ = ()


_STRATEGIES: dict[tuple[bool, bool], type[_TargetPolicy]] = {
    (True, False): ReadOnly,
    (True, True): ReadWrite,
    (False, True): WriteOnly,
    (False, False): _Unrouted,
}

#: Exact types only: a subclass that overrides a method must be asked on every query.
_FIXED: frozenset[type[object]] = frozenset(_STRATEGIES.values())


def strategy_for(target: TargetLike, *, read: bool, write: bool) -> _TargetPolicy:
    """Return the strategy ``in_database(target, read=read, write=write)`` stands for."""
    return _STRATEGIES[read, write](target)


def fixed_answers(policy: object) -> tuple[DatabaseTarget, str | None, str | None] | None:
    """Return what a built-in strategy answers whatever the query, or ``None``.

    Returns:
        For a built-in strategy: its target, and the alias it gives for reads and
        for writes (``None`` where it has no opinion). The router can then decide
        once per block instead of once per query. For any other policy: ``None``.
    """
    if isinstance(policy, _TargetPolicy) and type(policy) in _FIXED:
        alias = policy.target.alias
        return (
            policy.target,
            alias if policy.reads else None,
            alias if policy.writes else None,
        )
    return None
