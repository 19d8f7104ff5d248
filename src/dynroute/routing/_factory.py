"""``in_database()``: the block for a target and its flags, or for a policy; checked, cached.

Loose input is checked and normalised here, once (a target through the core's
``to_target``), so that a block only ever sees a policy. Blocks hold no per-entry
state, so ``with in_database("replica"):`` on every request reuses one block built
the first time, found by its arguments (:data:`_BLOCKS`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, overload

from dynroute.core import ReadOnly, ReadWrite, WriteOnly, configuration_key, strategy_for, to_target
from dynroute.exceptions import DynrouteError, UsageError
from dynroute.routing._block import InDatabase
from dynroute.routing._router import DynamicDbRouter

if TYPE_CHECKING:
    from collections.abc import Hashable

    from dynroute.core import RoutingPolicy, TargetLike
    from dynroute.replicas import PrimaryReplica

__all__ = ["in_database"]


class _Unset:
    """Marks an argument that was not passed."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


@overload
def in_database(
    target: TargetLike,
    /,
    *,
    read: bool = True,
    write: bool = False,
    alias: str | None = None,
    prevent_writes: bool = False,
) -> InDatabase[str]: ...


@overload
def in_database(
    *,
    policy: ReadOnly | ReadWrite | WriteOnly | PrimaryReplica,
    prevent_writes: bool = False,
) -> InDatabase[str]: ...


@overload
def in_database(
    *, policy: RoutingPolicy, prevent_writes: bool = False
) -> InDatabase[str | None]: ...


def in_database(  # noqa: PLR0913 - the public signature: a target, its options, or a policy
    target: TargetLike | _Unset = _UNSET,
    /,
    *,
    read: bool | _Unset = _UNSET,
    write: bool | _Unset = _UNSET,
    alias: str | None = None,
    policy: RoutingPolicy | _Unset = _UNSET,
    prevent_writes: bool | _Unset = _UNSET,
) -> InDatabase[Any]:
    """Route the queries of a block or of a function's calls to a database.

    Every query made while the block is active in the current thread or task goes
    where the block says, including queries made deep inside other code and through
    the async ORM. Use it as a context manager, an async context manager, or a
    decorator of sync and async functions::

        with in_database("replica"):                 # reads to "replica"
            report = build_report(Order.objects.filter(paid=True))

        with in_database("archive", write=True) as route:   # reads and writes
            Order.objects.create(...)
            log.info("archived to %s", route.alias)

        @in_database({"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db"})
        def count_rows(): ...

    Args:
        target: Where to route: an alias from ``settings.DATABASES``; a
            settings-style dict for a database that is not configured (registered on
            entry, torn down on exit); or a :data:`~dynroute.DatabaseTarget`.
        read: Route reads to ``target``. If ``False``, reads follow the enclosing
            block, then Django's usual rules.
        write: Route writes to ``target``. If ``False``, writes follow the enclosing
            block, then Django's usual rules (``"default"`` for new objects).
        alias: The alias to register a settings dict under (default: one chosen by
            dynroute, stable for the same settings).
        policy: Instead of ``target``/``read``/``write``: a :class:`RoutingPolicy`
            that decides per query. ``in_database(t, read=r, write=w)`` is
            ``in_database(policy=ReadOnly(t))`` etc.
        prevent_writes: Refuse every write inside the block, as a block inside
            :func:`~dynroute.prevent_writes` does.

    Returns:
        The block. ``with ... as route`` gives a :class:`Route`.

    Raises:
        UsageError: Both ``target`` and ``policy`` are given, or neither; ``policy``
            has no ``db_for_read``/``db_for_write``; ``read``/``write`` is not a
            ``bool`` or is given with ``policy``.
        InvalidTargetError: ``target`` is not an alias, a mapping or a target, or is
            a malformed configuration (a ``ValueError``, as in
            django-dynamic-db-router).
        UnknownDatabaseError: On entry, the alias is not in ``settings.DATABASES``.
    """
    if policy is _UNSET and alias is None and prevent_writes is _UNSET and type(target) is str:
        try:
            cached = _BLOCKS.get((target, read, write))
        except TypeError:  # an unhashable flag, refused below
            cached = None
        # Identity, not equality: read=1 must still be refused, though 1 == True.
        if cached is not None and cached[1] is read and cached[2] is write:
            return cached[0]
    prevent = _flag("prevent_writes", prevent_writes, default=False)
    if not isinstance(policy, _Unset):
        return _policy_block(
            policy, target=target, read=read, write=write, alias=alias, prevent_writes=prevent
        )
    if isinstance(target, _Unset):
        msg = "in_database() needs a target (an alias or a settings dict) or a policy=."
        raise UsageError(msg)
    kind = type(target)  # not narrowing target: to_target below takes any object
    key: object = target if kind is str else None
    if kind is dict and not prevent:
        # A settings dict, as a database-per-tenant site passes on every request:
        # checking and completing it costs more than the block's entry and exit.
        key, block = _configuration_block(target, alias, read, write)
        if block is not None:
            return block
    try:
        routes_reads = _flag("read", read, default=True)
        routes_writes = _flag("write", write, default=False)
        chosen = to_target(target, alias=alias)
    except DynrouteError as error:
        # A settings dict may hold a password, and tracebacks show frame locals
        # (Django's technical 500 page): drop it and its key (a copy), and the
        # frames below, which hold it too. The message says what is wrong.
        del target, key
        raise error.with_traceback(None) from None
    built: InDatabase[str] = InDatabase(
        strategy_for(chosen, read=routes_reads, write=routes_writes), prevent_writes=prevent
    )
    if key is not None and not prevent:
        _remember(key, read, write, built)
    return built


def _policy_block(  # noqa: PLR0913 - in_database's arguments, checked together
    policy: RoutingPolicy,
    *,
    target: object,
    read: object,
    write: object,
    alias: str | None,
    prevent_writes: bool,
) -> InDatabase[Any]:
    """Build a block on ``policy``, refusing the arguments that go with a target."""
    if not isinstance(target, _Unset):
        msg = (
            "in_database() takes a target or a policy=, not both: a policy names its own "
            "targets. Pass policy=ReadWrite(target) (or another strategy) alone."
        )
        raise UsageError(msg)
    if not isinstance(read, _Unset) or not isinstance(write, _Unset) or alias is not None:
        msg = (
            "read=, write= and alias= go with a target, not with policy=: the policy "
            "decides both directions."
        )
        raise UsageError(msg)
    _check_policy(policy)
    return InDatabase(policy, prevent_writes=prevent_writes)


#: Blocks by the arguments that made them (an alias, or the key of a settings dict
#: and its alias=, see configuration_key): a block holds no per-entry state, so
#: ``with in_database(x):`` can reuse one instead of building and checking a new one
#: on every entry. The last ``_BLOCKS_MAX`` built are kept, first in, first out (a
#: dict keeps insertion order; a hit moves nothing, so the hot path stays a lookup).
#: Keys of settings dicts hold their contents, as the blocks do: never shown
#: (in_database drops its own reference to a key before an error leaves it).
_BLOCKS: dict[tuple[object, object, object], tuple[InDatabase[str], object, object]] = {}
_BLOCKS_MAX = 256
# Taken by writers only (a miss builds a block, which costs far more): finding the
# oldest key iterates the dict, which another writer must not resize meanwhile.
_BLOCKS_LOCK = threading.Lock()


def _remember(key: object, read: object, write: object, block: InDatabase[str]) -> None:
    with _BLOCKS_LOCK:
        if len(_BLOCKS) >= _BLOCKS_MAX:
            del _BLOCKS[next(iter(_BLOCKS))]
        _BLOCKS[key, read, write] = (block, read, write)


def _configuration_block(
    settings: object, alias: str | None, read: object, write: object
) -> tuple[Hashable | None, InDatabase[str] | None]:
    """Return the key of a settings dict and the block already built from it, if any."""
    key = configuration_key(settings, alias)
    if key is None:
        return None, None
    try:
        cached = _BLOCKS.get((key, read, write))
    except TypeError:  # an unhashable flag, refused by the caller
        return None, None
    if cached is not None and cached[1] is read and cached[2] is write:
        return key, cached[0]
    return key, None


def _flag(name: str, value: object, *, default: bool) -> bool:
    if isinstance(value, _Unset):
        return default
    if not isinstance(value, bool):
        msg = f"in_database({name}=...) must be True or False, got {type(value).__name__}."
        raise UsageError(msg)
    return value


def _check_policy(policy: object) -> None:
    if isinstance(policy, DynamicDbRouter):
        msg = (
            "in_database(policy=...) cannot take dynroute's own router: it answers from "
            "the blocks, so as a block's policy it would ask itself. Pass the policy "
            "of the routing you want, as ReadWrite('replica') or a router of your own."
        )
        raise UsageError(msg)
    if isinstance(policy, type):
        msg = (
            f"in_database(policy=...) needs a policy object, not the class "
            f"{policy.__qualname__}: instantiate it, as in policy=ReadOnly('replica')."
        )
        raise UsageError(msg)
    missing = [
        name
        for name in ("db_for_read", "db_for_write")
        if not callable(getattr(policy, name, None))
    ]
    if missing:
        msg = (
            f"in_database(policy=...) needs an object with db_for_read() and "
            f"db_for_write(); {type(policy).__name__} has no {'() or '.join(missing)}(). "
            "Use ReadOnly/ReadWrite/WriteOnly(target), or any class with both methods."
        )
        raise UsageError(msg)
