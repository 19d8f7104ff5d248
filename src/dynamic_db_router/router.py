"""The ``dynamic_db_router.router`` module of django-dynamic-db-router, on dynroute."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynroute import DynamicDbRouter, InDatabase
from dynroute import in_database as _in_database

if TYPE_CHECKING:
    from dynroute.typing import TargetLike

__all__ = ["DynamicDbRouter", "in_database"]


def in_database(database: TargetLike, read: bool = True, write: bool = False) -> InDatabase[str]:  # noqa: FBT001, FBT002 - the signature of django-dynamic-db-router
    """Route a block's or a function's queries to ``database``.

    The signature of django-dynamic-db-router's ``in_database``: ``read`` and
    ``write`` may be passed by position. See :func:`dynroute.in_database`.

    Args:
        database: An alias from ``settings.DATABASES``, or a settings-style dict for
            a database that is not configured.
        read: Route reads to ``database``.
        write: Route writes to ``database``.

    Returns:
        The block, usable with ``with``, ``async with`` and as a decorator.
    """
    return _in_database(database, read=read, write=write)
