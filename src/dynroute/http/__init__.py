"""HTTP: the request middlewares, each running a request inside a block.

- ``_replicas``: ``PrimaryReplicaMiddleware`` (``DYNROUTE_PRIMARY_REPLICA``): reads on a
  replica, pinned to the primary after a client writes;
- ``_database``: ``DatabaseMiddleware`` (``DYNROUTE_REQUEST_ROUTE``): the database a
  resolver chooses per request (a tenant's), locked to it if asked;
- ``_streaming``: what both share (a streaming response iterated inside the block).

Their public face, the path settings name, is :mod:`dynroute.middleware`. They sit
above the blocks they enter (``dynroute.routing``).
"""

from __future__ import annotations

from dynroute.http._database import DatabaseMiddleware, RequestRouteSettings
from dynroute.http._replica_settings import PrimaryReplicaSettings
from dynroute.http._replicas import PrimaryReplicaMiddleware

__all__ = [
    "DatabaseMiddleware",
    "PrimaryReplicaMiddleware",
    "PrimaryReplicaSettings",
    "RequestRouteSettings",
]
