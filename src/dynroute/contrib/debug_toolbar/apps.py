"""The app of the routing panel: add ``"dynroute.contrib.debug_toolbar"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["RoutingPanelConfig"]


class RoutingPanelConfig(AppConfig):
    """Holds the panel's template; no models.

    Its label is not the last part of its name, ``debug_toolbar``, which is the
    toolbar's own.
    """

    name = "dynroute.contrib.debug_toolbar"
    label = "dynroute_debug_toolbar"
    verbose_name = "dynroute debug toolbar panel"
