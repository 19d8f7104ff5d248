"""Django settings for the routing panel's tests: the suite's databases, with the toolbar.

Run with ``pytest tests/toolbar --ds=tests.toolbar.settings`` (``nox -s browser``).
The toolbar is shown on every request (``SHOW_TOOLBAR_CALLBACK``), with the SQL panel
and dynroute's routing panel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests import settings as base

if TYPE_CHECKING:
    from django.http import HttpRequest

DATABASES = base.DATABASES
DATABASE_ROUTERS = base.DATABASE_ROUTERS
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "debug_toolbar",
    "dynroute",
    "dynroute.contrib.debug_toolbar",
    "tests.testapp",
]
MIDDLEWARE = ["debug_toolbar.middleware.DebugToolbarMiddleware"]
ROOT_URLCONF = "tests.toolbar.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
STATIC_URL = "/static/"
SECRET_KEY = base.SECRET_KEY
USE_TZ = True
DEFAULT_AUTO_FIELD = base.DEFAULT_AUTO_FIELD
INTERNAL_IPS = ["127.0.0.1"]


def show_toolbar(request: HttpRequest) -> bool:
    """Show the toolbar on every request (tests run with DEBUG=False).

    Except those with the header ``X-Hide-Toolbar``, as a site's callback hides it from
    most users (the toolbar caches the callback: overriding the setting would not do).
    """
    return "X-Hide-Toolbar" not in request.headers


DEBUG_TOOLBAR_CONFIG = {
    "SHOW_TOOLBAR_CALLBACK": "tests.toolbar.settings.show_toolbar",
    # The toolbar refuses to run under tests unless told it is meant to.
    "IS_RUNNING_TESTS": False,
}
DEBUG_TOOLBAR_PANELS = [
    "debug_toolbar.panels.sql.SQLPanel",
    "dynroute.contrib.debug_toolbar.RoutingPanel",
]
