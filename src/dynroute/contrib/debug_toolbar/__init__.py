"""A django-debug-toolbar panel that shows how dynroute routed each query of a request.

Install the extra and add the app and the panel::

    pip install django-dynroute[debug-toolbar]

    INSTALLED_APPS = [..., "debug_toolbar", "dynroute.contrib.debug_toolbar"]
    DEBUG_TOOLBAR_PANELS = [..., "dynroute.contrib.debug_toolbar.RoutingPanel"]

The app holds the panel's template (found by ``APP_DIRS``). Without
django-debug-toolbar, importing this package raises an ``ImportError`` naming the
extra to install.
"""

from __future__ import annotations

from dynroute.contrib.debug_toolbar._panel import RoutingPanel

__all__ = ["RoutingPanel"]
