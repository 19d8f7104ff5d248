"""Tenants: a request locked to its database (``DYNROUTE_REQUEST_LOCK``), ``unlocked()``.

The request middleware that chooses each request's database is in ``dynroute.http``
(``dynroute.middleware.DatabaseMiddleware``): it enters a block, which this room cannot
import.
"""

from __future__ import annotations

from dynroute.tenants._locks import Unlocked, check, lock, release, unlocked

__all__ = ["Unlocked", "check", "lock", "release", "unlocked"]
