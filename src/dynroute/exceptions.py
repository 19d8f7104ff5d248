"""Exceptions raised by dynroute.

Every exception the package raises derives from :class:`DynrouteError`. Where Django
or Python already has a class users catch for the same failure, the dynroute class
derives from it too, so existing ``except`` clauses keep working::

    Exception
    └── DynrouteError
        ├── UsageError              (+ TypeError)      in_database() or a decorator misused
        ├── InvalidTargetError      (+ ValueError)     a target of the wrong kind or shape
        ├── UnknownDatabaseError    (+ ConnectionDoesNotExist)
        │                                              an alias that is not configured
        ├── ConfigurationError      (+ ImproperlyConfigured)
        │   │                                          no router, or a configuration refused
        │   └── RouteNotCarriedError                   a task's route cannot travel by name
        ├── DatabaseConnectionError (+ django.db.OperationalError)
        │                                              a runtime database unreachable
        ├── RouteStateError         (+ RuntimeError)   a block left where it is not active
        └── WriteForbiddenError     (+ django.db.DatabaseError)
                                                       a write inside prevent_writes()

Messages name the value at fault (never a password) and say what to do instead.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db.utils import DatabaseError, OperationalError
from django.utils.connection import ConnectionDoesNotExist

__all__ = [
    "ConfigurationError",
    "DatabaseConnectionError",
    "DynrouteError",
    "InvalidTargetError",
    "RouteLockedError",
    "RouteNotCarriedError",
    "RouteStateError",
    "UnknownDatabaseError",
    "UsageError",
    "WriteForbiddenError",
]


class DynrouteError(Exception):
    """Root of every exception raised by dynroute."""


class UsageError(DynrouteError, TypeError):
    """``in_database`` or its decorator was called in a way it does not support.

    Examples: both a target and a policy (or neither), a ``policy`` without
    ``db_for_read``/``db_for_write``, a flag that is not a ``bool``, decorating a
    generator function.
    """


class InvalidTargetError(DynrouteError, ValueError):
    """A database target is of the wrong kind or shape.

    ``in_database`` accepts an alias (``str``), a settings-style mapping, or a
    :data:`~dynroute.DatabaseTarget`; anything else raises this. It is a
    ``ValueError``, as in django-dynamic-db-router.
    """


class UnknownDatabaseError(DynrouteError, ConnectionDoesNotExist):
    """An alias is not in ``settings.DATABASES``; raised when a block is entered."""


class ConfigurationError(DynrouteError, ImproperlyConfigured):
    """Settings keep a block from routing as asked.

    Raised on entry when ``DATABASE_ROUTERS`` lacks dynroute's router, and when a
    runtime database configuration cannot be set up as given.
    """


class DatabaseConnectionError(DynrouteError, OperationalError):
    """A block on a runtime configuration could not connect to its database.

    Raised on entry, with nothing left registered, when the server is down or refuses
    the login. The message names the alias and the server, never the password; the
    driver's error is summarised in it rather than chained, because the driver's
    frames hold the connection parameters.
    """


class RouteStateError(DynrouteError, RuntimeError):
    """A block was left where it is not active.

    A block is left once per entry, in the thread or task that entered it. Leaving it
    twice, in another thread or task, or after an enclosing block was left (which
    drops the blocks still active inside it) raises this.
    """


class RouteLockedError(DynrouteError, RuntimeError):
    """A block was entered on another database inside a request locked to one.

    ``DatabaseMiddleware`` with ``DYNROUTE_REQUEST_LOCK = True`` locks each request to
    the database its resolver chose; code meant to reach others enters
    ``dynroute.unlocked()`` first. The message names both aliases, never a setting.
    """


class WriteForbiddenError(DynrouteError, DatabaseError):
    """A write was attempted inside ``prevent_writes()``; nothing reached the server.

    The message names the database and the model, or the first words of the
    statement (literals blanked), never its parameters.
    """


class RouteNotCarriedError(ConfigurationError):
    """A Celery task's route cannot travel in its headers: a block on settings not named.

    Raised, in the worker, by the first query of a task enqueued inside a block on a
    runtime configuration that ``DYNROUTE_DATABASES`` does not name (or whose names the
    worker cannot find): the task fails rather than run on another database.
    """
