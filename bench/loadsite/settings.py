"""Settings of the load benchmark's project, for the variant :mod:`loadsite.config` reads."""

from __future__ import annotations

from typing import Any

from loadsite.config import CONFIG, MAX_IDLE, SHARED, TENANTS, VARIANT, database

SECRET_KEY = "load-benchmark-only-not-a-secret"  # noqa: S105 - a throwaway local server
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "loadsite.urls"
WSGI_APPLICATION = "loadsite.wsgi.application"
INSTALLED_APPS = ["loadsite.apps.LoadsiteConfig"]
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES: dict[str, dict[str, Any]] = {
    "default": database(SHARED),  # the primary of the shared database
    "replica": {**database(SHARED, port=CONFIG["standby_port"]), "TEST": {"MIRROR": "default"}},
}

if VARIANT == "dynroute":
    INSTALLED_APPS += ["dynroute"]
    DATABASE_ROUTERS = ["dynroute.DynamicDbRouter"]
    # The order the docs recommend: the shared database's block outside, the tenant's
    # block inside it (the innermost block decides).
    MIDDLEWARE += [
        "dynroute.middleware.PrimaryReplicaMiddleware",
        "dynroute.middleware.DatabaseMiddleware",
    ]
    DYNROUTE_PRIMARY_REPLICA = {"primary": "default", "replicas": ["replica"]}
    DYNROUTE_REQUEST_ROUTE = "loadsite.tenants.database_for"
    if MAX_IDLE is not None:
        DYNROUTE_MAX_IDLE_CONNECTIONS = MAX_IDLE
else:
    # Every tenant is an alias: the views name it with .using().
    DATABASES.update({f"tenant_{tenant}": database(tenant) for tenant in sorted(TENANTS)})
    if VARIANT == "multidb":
        DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]
        MIDDLEWARE += ["multidb.middleware.PinningRouterMiddleware"]
        REPLICA_DATABASES = ["replica"]

# The servers' stderr is captured: dynroute's warnings and the tracebacks of 500s.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "dynroute": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
    },
}
