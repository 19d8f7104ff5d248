"""Request middleware: each request runs inside a block.

``PrimaryReplicaMiddleware`` runs each request in a :class:`~dynroute.PrimaryReplica`
block configured by ``settings.DYNROUTE_PRIMARY_REPLICA``::

    MIDDLEWARE = [..., "dynroute.middleware.PrimaryReplicaMiddleware", ...]
    DYNROUTE_PRIMARY_REPLICA = {"primary": "default", "replicas": ["replica1"]}

``DatabaseMiddleware`` runs each request in the block a resolver of the project
chooses (a database per tenant, say), configured by ``settings.DYNROUTE_REQUEST_ROUTE``::

    MIDDLEWARE = [..., "dynroute.middleware.DatabaseMiddleware", ...]
    DYNROUTE_REQUEST_ROUTE = "tenants.routing.database_for"   # (request) -> target
    DYNROUTE_REQUEST_LOCK = True    # a request cannot enter a block on another database

The middleware only enters blocks; the routing is the block's. It serves WSGI and ASGI
without a thread hop. Settings are read when Django builds the middleware chain: when
the WSGI or ASGI handler is created (server or worker start), or at a test client's
first request; each middleware keeps them, checked, as its ``settings`` (a
:class:`PrimaryReplicaSettings` or a :class:`RequestRouteSettings`).
"""

from __future__ import annotations

from dynroute.http import (
    DatabaseMiddleware,
    PrimaryReplicaMiddleware,
    PrimaryReplicaSettings,
    RequestRouteSettings,
)

__all__ = [
    "DatabaseMiddleware",
    "PrimaryReplicaMiddleware",
    "PrimaryReplicaSettings",
    "RequestRouteSettings",
]
