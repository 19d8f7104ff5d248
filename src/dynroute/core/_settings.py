"""Settings-style database configurations: their type, validation and defaults.

A configuration given to ``in_database`` is checked once, here, when the target is
built: wrong keys and wrong types fail at once, with a message that names the key but
never a value (values may be secrets). Django's own defaults are then filled in the
way ``settings.DATABASES`` gets them, so the entry Django later sees is complete: a
dict with only ``ENGINE`` and ``NAME`` works (DJANGO_NOTES §1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import django
from django.db.utils import ConnectionHandler

from dynroute.exceptions import ConfigurationError, InvalidTargetError

if sys.version_info >= (3, 11):
    from typing import Required
else:  # pragma: no cover - exercised on Python 3.10 only
    from typing_extensions import Required  # noqa: TC002 - TypedDict reads Required at class creation

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DatabaseSettings", "copy_structure", "normalize_settings"]


class DatabaseSettings(TypedDict, total=False):
    """One entry of ``settings.DATABASES``; only ``ENGINE`` is required.

    See https://docs.djangoproject.com/en/stable/ref/settings/#databases for the
    meaning of each key. Keys Django fills by default may be left out.
    """

    ENGINE: Required[str]
    NAME: str | os.PathLike[str]
    USER: str
    PASSWORD: str
    HOST: str
    PORT: str | int
    OPTIONS: dict[str, Any]
    TIME_ZONE: str | None
    CONN_MAX_AGE: int | None
    CONN_HEALTH_CHECKS: bool
    AUTOCOMMIT: bool
    ATOMIC_REQUESTS: bool
    DISABLE_SERVER_SIDE_CURSORS: bool
    TEST: dict[str, Any]


#: Whether this Django provides connection pools (PostgreSQL 5.1+, Oracle 5.2+).
POOLS = django.VERSION >= (5, 1)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_name(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_port(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_optional_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_max_age(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _is_mapping(value: object) -> bool:
    return isinstance(value, Mapping)


# Key -> (check, what the check expects, in words for the error message).
_KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "ENGINE": (_is_str, "a dotted path to a database backend"),
    "NAME": (_is_name, "a str or a path"),
    "USER": (_is_str, "a str"),
    "PASSWORD": (_is_str, "a str"),
    "HOST": (_is_str, "a str"),
    "PORT": (_is_port, "a str or an int"),
    "OPTIONS": (_is_mapping, "a dict"),
    "TIME_ZONE": (_is_optional_str, "a str or None"),
    "CONN_MAX_AGE": (_is_max_age, "a number of seconds >= 0, or None"),
    "CONN_HEALTH_CHECKS": (_is_bool, "True or False"),
    "AUTOCOMMIT": (_is_bool, "True or False"),
    "ATOMIC_REQUESTS": (_is_bool, "True or False"),
    "DISABLE_SERVER_SIDE_CURSORS": (_is_bool, "True or False"),
    "TEST": (_is_mapping, "a dict"),
}


def _shown(key: object) -> str:
    """Show a key in a message: its repr, cut short (keys are names, not secrets)."""
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def copy_structure(value: Any) -> Any:  # noqa: ANN401 - settings values are of any type
    """Copy nested dicts and lists, sharing their leaves.

    ``copy.deepcopy`` fails on values Django accepts in ``OPTIONS`` (an
    ``ssl.SSLContext``, a pool's ``configure`` callable); only the containers need to
    be fresh so that nothing Django does to its copy reaches the caller's.
    """
    if isinstance(value, Mapping):
        return {key: copy_structure(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list):
        return [copy_structure(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def normalize_settings(given: object) -> dict[str, Any]:
    """Check a settings-style mapping and return a complete copy of it.

    Args:
        given: One entry as it would appear in ``settings.DATABASES``. Typed
            ``object``: callers without a type checker pass anything.

    Returns:
        A new dict with Django's defaults filled in (``TIME_ZONE``, ``OPTIONS``,
        ``CONN_MAX_AGE``, ``TEST``, ...). ``raw`` is not modified.

    Raises:
        InvalidTargetError: ``given`` is not a mapping, a key is unknown, ``ENGINE``
            is missing, a value has the wrong type, or a value contains itself. The
            message names the key, never the value.
        ConfigurationError: The configuration is well formed but cannot be used at
            run time (``ATOMIC_REQUESTS=True``, a pool on Django < 5.1).
    """
    if not isinstance(given, Mapping):
        msg = f"A database configuration must be a mapping, got {type(given).__name__}."
        raise InvalidTargetError(msg)
    raw = cast("Mapping[object, object]", given)
    unknown = [key for key in raw if key not in _KEYS]
    if unknown:
        names = ", ".join(sorted(_shown(key) for key in unknown))
        msg = (
            f"Unknown key(s) in the database configuration: {names}. "
            f"Known keys are those of settings.DATABASES: {', '.join(sorted(_KEYS))}."
        )
        raise InvalidTargetError(msg)
    if "ENGINE" not in raw or not raw["ENGINE"]:
        msg = (
            "The database configuration has no ENGINE. Give the backend's dotted path, "
            "for example {'ENGINE': 'django.db.backends.postgresql', 'NAME': ...}."
        )
        raise InvalidTargetError(msg)
    for key, value in raw.items():
        known = cast("str", key)  # every key is known by now
        check, expected = _KEYS[known]
        if not check(value):
            msg = (
                f"{key} in the database configuration must be {expected}, "
                f"got a value of type {type(value).__name__}."
            )
            raise InvalidTargetError(msg)
    if raw.get("ATOMIC_REQUESTS"):
        # Django wraps every view of the process in a transaction on every alias with
        # ATOMIC_REQUESTS=True (DJANGO_NOTES §1): a runtime alias must not do that.
        msg = (
            "ATOMIC_REQUESTS=True is refused for a runtime database configuration: "
            "Django would wrap every request of the process in a transaction on it. "
            "Use transaction.atomic(using=route.alias) inside the block instead."
        )
        raise ConfigurationError(msg)
    given_options = raw.get("OPTIONS", {})
    options = cast("Mapping[str, object]", given_options)
    if options.get("pool") and not POOLS:
        msg = (
            f"OPTIONS['pool'] needs Django 5.1 or later (this is Django "
            f"{django.get_version()}); remove it or upgrade Django."
        )
        raise ConfigurationError(msg)
    if options.get("pool") and raw.get("CONN_MAX_AGE", 0) != 0:
        msg = (
            "OPTIONS['pool'] cannot be combined with a CONN_MAX_AGE other than 0 (Django "
            "refuses persistent connections on a pool); leave CONN_MAX_AGE out."
        )
        raise ConfigurationError(msg)
    try:
        copied = copy_structure(raw)
    except RecursionError:
        msg = (
            "The database configuration contains itself (a dict or list holding itself, "
            "at some depth) or is nested too deeply to copy; settings are plain data."
        )
        raise InvalidTargetError(msg) from None
    filled: dict[str, Any] = ConnectionHandler({"default": copied}).settings["default"]
    return filled
