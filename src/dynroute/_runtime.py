"""Runtime database configurations: registered on block entry, torn down on exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynroute._targets import DatabaseConfiguration

__all__ = ["aenter_orm_thread", "aleave", "enter", "leave"]


def enter(target: DatabaseConfiguration) -> None:
    """Register ``target`` for a block being entered."""
    msg = f"Runtime configurations are not supported yet ({target!r})."
    raise NotImplementedError(msg)


def leave(target: DatabaseConfiguration) -> None:
    """Release ``target`` for a block being left."""
    raise NotImplementedError(repr(target))


async def aenter_orm_thread(target: DatabaseConfiguration) -> None:
    """Note that the async ORM's thread uses ``target``."""
    raise NotImplementedError(repr(target))


async def aleave(target: DatabaseConfiguration) -> None:
    """Release ``target`` for an async block being left."""
    raise NotImplementedError(repr(target))
