"""Settings the django-stubs mypy plugin loads: the test project plus the demo app."""

from __future__ import annotations

from tests import settings as base

DATABASES = base.DATABASES
DATABASE_ROUTERS = base.DATABASE_ROUTERS
INSTALLED_APPS = [*base.INSTALLED_APPS, "dynroute.demo"]
SECRET_KEY = base.SECRET_KEY
USE_TZ = base.USE_TZ
DEFAULT_AUTO_FIELD = base.DEFAULT_AUTO_FIELD
