"""The optional Django app: add ``"dynroute"`` to ``INSTALLED_APPS`` for its system checks.

dynroute works without it; installed, ``manage.py check`` reports a router that is
missing from ``DATABASE_ROUTERS`` or placed where it never decides, replicas that would
not mirror their primary in tests, and middlewares in an order that misroutes.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from dynroute.checks import check_middleware_order, check_replica_mirrors, check_routers

__all__ = ["DynrouteConfig"]


class DynrouteConfig(AppConfig):
    """dynroute as an installed app: it has no models, only system checks."""

    name = "dynroute"
    verbose_name = "dynroute"

    def ready(self) -> None:
        """Register the system checks."""
        checks.register(check_routers)
        checks.register(check_replica_mirrors)
        checks.register(check_middleware_order)
