"""Routing: ``in_database()`` and its blocks, and the router Django asks on every query.

This is where the features meet the route stack, so it sits above every feature room
and imports them through their faces:

- ``_factory``: ``in_database()``, its checks and its cache of blocks;
- ``_block``: ``InDatabase``, whose usual entry and exit cost two ContextVar calls;
- ``_features``: the checked path of a block: the one place that knows which room
  does what on entry and exit;
- ``_router``: ``DynamicDbRouter``, reading the route stack on every query;
- ``_current``: ``current_route()`` and ``current_alias()``.
"""

from __future__ import annotations

from dynroute.routing._block import InDatabase, Route
from dynroute.routing._current import current_alias, current_route
from dynroute.routing._factory import in_database
from dynroute.routing._router import (
    DynamicDbRouter,
    forget_router_check,
    installed,
    require_router,
)

__all__ = [
    "DynamicDbRouter",
    "InDatabase",
    "Route",
    "current_alias",
    "current_route",
    "forget_router_check",
    "in_database",
    "installed",
    "require_router",
]
