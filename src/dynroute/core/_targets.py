"""Database targets: where a block routes to.

A target is one of two things, and nothing else:

- :class:`DatabaseAlias`: a database configured in ``settings.DATABASES``;
- :class:`DatabaseConfiguration`: a settings-style dict for a database that is not in
  settings, registered under a runtime alias while a block on it is active.

:func:`to_target` is the one place where loose input (``str``, a mapping, a target)
becomes a :data:`DatabaseTarget`; everything past it sees only the two types.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import threading
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, TypeAlias, cast, final

from dynroute.core._settings import DatabaseSettings, normalize_settings
from dynroute.exceptions import (
    ConfigurationError,
    DynrouteError,
    InvalidTargetError,
    UsageError,
)

__all__ = [
    "DatabaseAlias",
    "DatabaseConfiguration",
    "DatabaseTarget",
    "TargetLike",
    "check_alias",
    "to_target",
]

#: Prefix of the aliases dynroute gives to runtime configurations.
AUTO_ALIAS_PREFIX = "dynroute_"


def check_alias(alias: object, *, what: str = "alias") -> str:
    """Return ``alias`` if it can name a database, else raise.

    Args:
        alias: The candidate name.
        what: How the message refers to it.

    Raises:
        InvalidTargetError: Not a non-empty ``str``; starts with ``_`` (such names
            resolve to attributes of Django's connection handler, DJANGO_NOTES §3); or
            looks like a database URL (which the message does not repeat, since URLs
            carry passwords).
    """
    if not isinstance(alias, str):
        msg = f"A database {what} must be a str, got {type(alias).__name__}."
        raise InvalidTargetError(msg)
    if not alias:
        msg = f"A database {what} must not be empty."
        raise InvalidTargetError(msg)
    if "://" in alias:
        msg = (
            f"The database {what} looks like a URL (not shown: it may hold a password). "
            "in_database() takes an alias from settings.DATABASES or a settings dict; "
            "turn a URL into a dict first, for example with dj_database_url.parse()."
        )
        raise InvalidTargetError(msg)
    if alias.startswith("_"):
        msg = (
            f"The database {what} {alias!r} starts with '_': Django's connection handler "
            "resolves such names to its own attributes. Choose a name without a "
            "leading underscore."
        )
        raise InvalidTargetError(msg)
    return alias


@final
@dataclass(frozen=True, slots=True)
class DatabaseAlias:
    """A database configured in ``settings.DATABASES``, named by its alias.

    Whether the alias exists is checked when a block on it is entered, not here, so a
    target can be built at import time, before settings are loaded.

    Args:
        alias: The key in ``settings.DATABASES``.

    Raises:
        InvalidTargetError: ``alias`` cannot name a database (see :func:`check_alias`).
    """

    alias: str

    def __post_init__(self) -> None:
        """Check the alias."""
        check_alias(self.alias)


class _Names:
    """Process-wide names of runtime configurations: one per configuration, forever.

    A name is never given to a second configuration once a connection was made under
    it: a thread that still holds a connection wrapper under that name would talk to
    the old database (DJANGO_NOTES §3). Configurations are compared by a keyed hash of
    their complete settings; the key is random per process, so the table holds no
    secret and no hash an attacker could test passwords against.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._counter = itertools.count(1)
        self._auto: dict[bytes, str] = {}
        self._owner: dict[str, bytes] = {}

    def fingerprint(self, settings: Mapping[str, Any]) -> bytes:
        """Return the keyed hash that identifies a complete configuration.

        Runs when a configuration is built, not per block: blocks built from equal
        settings dicts are reused (see ``configuration_key``).
        """
        tokens: list[str] = []
        _canonical(settings, tokens)
        data = "\x1f".join(tokens).encode()  # reprs: lone surrogates come escaped
        return hashlib.blake2b(data, key=self._key, digest_size=16).digest()

    def auto(self, fingerprint: bytes) -> str:
        """Return the stable automatic name of a configuration."""
        with self._lock:
            name = self._auto.get(fingerprint)
            if name is None:
                name = f"{AUTO_ALIAS_PREFIX}{next(self._counter)}"
                self._auto[fingerprint] = name
                self._owner[name] = fingerprint
            return name

    def claim(self, name: str, fingerprint: bytes) -> bool:
        """Bind a user-chosen name to a configuration, or raise if it names another.

        Returns:
            Whether this call bound it (``False`` if it already was).
        """
        with self._lock:
            owner = self._owner.get(name)
            if owner is None:
                self._owner[name] = fingerprint
                return True
        if owner != fingerprint:
            msg = (
                f"The alias {name!r} already names another database configuration in "
                "this process. A name is never reused for a different configuration "
                "(threads may still hold connections under it): choose a new alias, "
                "for example with a version suffix, or leave alias= out."
            )
            raise ConfigurationError(msg)
        return False

    def release(self, name: str, fingerprint: bytes) -> None:
        """Unbind a user-chosen name that no connection was ever made under."""
        with self._lock:
            if self._owner.get(name) == fingerprint:
                del self._owner[name]


def _canonical(value: object, tokens: list[str]) -> None:
    """Append tokens that spell ``value`` unambiguously, tagged with classes.

    Equal tokens mean equal settings of the same types: ``1``, ``1.0`` and ``True``
    differ, a list differs from a tuple, and a path from a string or from a dict that
    spells it. Mappings are sorted, so the order of their keys does not matter. The
    tokens never contain the separator the caller joins them with (U+001F, the unit
    separator): every value is written as a ``repr``, which escapes it.
    """
    kind = type(value)
    if kind in _PLAIN:
        tokens.append(kind.__name__)
        tokens.append(repr(value))
    elif isinstance(value, Mapping):
        entries: list[tuple[str, object]] = []
        mapping = cast("Mapping[object, object]", value)
        for key, item in mapping.items():
            spelt: list[str] = []
            _canonical(key, spelt)
            entries.append(("\x1f".join(spelt), item))
        entries.sort(key=_first)
        tokens.append("{")
        for key, item in entries:
            tokens.append(key)
            _canonical(item, tokens)
        tokens.append("}")
    elif kind is list or kind is tuple:
        tokens.append(kind.__name__)
        members = cast("list[object] | tuple[object, ...]", value)
        for item in members:
            _canonical(item, tokens)
        tokens.append("end")
    elif isinstance(value, os.PathLike):
        tokens.append("path")
        path = cast("os.PathLike[str]", value)
        tokens.append(repr(os.fspath(path)))
    else:  # anything else by its class and its repr
        tokens.append(f"{kind.__module__}.{kind.__qualname__}")
        tokens.append(repr(repr(value)))


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _first(entry: tuple[str, object]) -> str:
    return entry[0]


_NAMES = _Names()


@final
@dataclass(frozen=True, slots=True, init=False, eq=False, repr=False)
class DatabaseConfiguration:
    """A database that is not in settings, given as a settings-style mapping.

    The configuration is checked and completed with Django's defaults here; it is
    registered with Django only while a block on it is active. Its alias is stable:
    the same settings always get the same alias in a process, and an alias is never
    given to another configuration.

    Args:
        settings: One entry as it would appear in ``settings.DATABASES``; only
            ``ENGINE`` is required. It is copied; later changes to it have no effect.
        alias: The name to register it under. By default dynroute chooses one
            (``dynroute_<n>``). It must not start with ``_``; it must not be in
            ``settings.DATABASES``, nor name other settings once a block on those
            has connected (both checked when a block is entered).

    Raises:
        InvalidTargetError: A key is unknown, ``ENGINE`` is missing, or a value has
            the wrong type; or ``alias`` cannot name a database.
        ConfigurationError: ``ATOMIC_REQUESTS=True``, or a pool Django cannot
            provide.
    """

    alias: str
    settings: Mapping[str, Any] = field(repr=False)
    fingerprint: bytes = field(repr=False)
    chosen_alias: bool = field(repr=False)

    def __init__(
        self,
        settings: DatabaseSettings | Mapping[str, Any],
        /,
        *,
        alias: str | None = None,
    ) -> None:
        """Check and complete ``settings``, and name the configuration."""
        try:
            complete = normalize_settings(settings)
            fingerprint = _NAMES.fingerprint(complete)
            # A chosen name is bound to these settings when a block first registers
            # it (see claim_alias), not here: building a configuration uses nothing.
            name = _NAMES.auto(fingerprint) if alias is None else check_alias(alias)
        except DynrouteError as error:
            # Keep the settings, which may hold a password, out of the frame locals
            # that tracebacks show: drop them and the frames below. The message
            # names the problem.
            del settings
            raise error.with_traceback(None) from None
        object.__setattr__(self, "alias", name)
        object.__setattr__(self, "settings", MappingProxyType(complete))
        object.__setattr__(self, "fingerprint", fingerprint)
        object.__setattr__(self, "chosen_alias", alias is not None)

    def __eq__(self, other: object) -> bool:
        """Configurations are equal when they have the same alias and settings."""
        if not isinstance(other, DatabaseConfiguration):
            return NotImplemented
        return (self.alias, self.fingerprint) == (other.alias, other.fingerprint)

    def __hash__(self) -> int:
        """Hash by alias and settings, consistently with ``__eq__``."""
        return hash((self.alias, self.fingerprint))

    def __repr__(self) -> str:
        """Show what identifies the database, never ``PASSWORD`` or ``OPTIONS``."""
        shown = ", ".join(
            f"{key}={self.settings[key]!r}"
            for key in ("ENGINE", "NAME", "HOST", "PORT")
            if self.settings.get(key)
        )
        return f"DatabaseConfiguration(alias={self.alias!r}, {shown})"


#: A database target: an alias from settings, or a runtime configuration.
DatabaseTarget: TypeAlias = DatabaseAlias | DatabaseConfiguration

#: Everything ``in_database`` accepts as a target, before normalisation.
TargetLike: TypeAlias = str | DatabaseSettings | Mapping[str, Any] | DatabaseTarget


def configuration_key(settings: object, alias: str | None) -> Hashable | None:
    """Identify a settings dict as given, with its ``alias=``, to reuse what it built.

    The key is a copy of the dict's contents, each value tagged with its exact class,
    so that it equals another key only for the same contents: ``1``, ``1.0`` and
    ``True`` differ, as a list differs from a tuple. Dicts with the same items in
    another order get different keys (and then blocks of their own, on the same alias).

    Returns:
        The key, or ``None`` if the dict holds anything but plain data (``str``,
        ``int``, ``float``, ``bool``, ``None``, paths, and dicts with ``str`` keys,
        lists and tuples of those) or contains itself: then it is built afresh.
    """
    try:
        contents = _plain(settings)
    except RecursionError:
        return None
    return None if contents is _NOT_PLAIN else (alias, contents)


_NOT_PLAIN = object()
_PLAIN_CLASSES = frozenset({str, int, float, bool, type(None)})


def _plain(value: object) -> object:
    """Return ``value`` as hashable plain data tagged with classes, or ``_NOT_PLAIN``.

    Not :func:`_canonical`, which takes any value, sorts and calls ``repr`` for names
    that last forever: this runs on every ``in_database(dict)``, and a miss only costs
    a block built afresh.
    """
    kind = value.__class__
    if kind in _PLAIN_CLASSES:
        return (kind, value)
    if kind is dict:
        items: list[tuple[str, object]] = []
        mapping = cast("dict[object, object]", value)
        for key, item in mapping.items():
            contents = _plain(item)
            if type(key) is not str or contents is _NOT_PLAIN:
                return _NOT_PLAIN
            items.append((key, contents))
        return (dict, tuple(items))
    if kind is list or kind is tuple:
        listed = cast("list[object]", value)
        members = tuple(_plain(item) for item in listed)
        return _NOT_PLAIN if _NOT_PLAIN in members else (kind, members)
    if isinstance(value, PurePath):
        return (kind, str(value))
    return _NOT_PLAIN


def to_target(value: object, *, alias: str | None = None) -> DatabaseTarget:
    """Turn what a user passed as a target into a :data:`DatabaseTarget`.

    Args:
        value: An alias, a settings-style mapping, or a target.
        alias: A name for a runtime configuration; only with a mapping.

    Returns:
        ``value`` itself if it is already a target; otherwise a new one.

    Raises:
        InvalidTargetError: ``value`` is of none of the accepted kinds, or is a bad
            alias or configuration.
        UsageError: ``alias`` is given with something other than a mapping.
    """
    match value:
        case DatabaseAlias() | DatabaseConfiguration():
            target: DatabaseTarget = value
        case str():
            target = DatabaseAlias(value)
        case Mapping():
            return DatabaseConfiguration(value, alias=alias)  # pyright: ignore[reportUnknownArgumentType]
        case _:
            raise InvalidTargetError(_wrong_kind(value))
    if alias is not None:
        msg = (
            f"alias={alias!r} names a runtime configuration; it can only be given with a "
            f"settings dict, not with {target!r}."
        )
        raise UsageError(msg)
    return target


def _wrong_kind(value: object) -> str:
    if callable(value):
        hint = (
            " It was given a callable: to decorate a function, name the database "
            "first, as in @in_database('replica'), not @in_database."
        )
    else:
        hint = ""
    return (
        "A database target must be an alias from settings.DATABASES (str), a "
        "settings-style dict, or a DatabaseAlias/DatabaseConfiguration; got "
        f"{type(value).__name__}.{hint}"
    )


def claim_alias(config: DatabaseConfiguration) -> bool:
    """Bind a configuration's chosen alias to its settings, on registration.

    Returns:
        Whether this call bound it: the caller may :func:`release_alias` it if the
        registration ends without any connection made.

    Raises:
        ConfigurationError: The alias already names other settings in this process.
    """
    return config.chosen_alias and _NAMES.claim(config.alias, config.fingerprint)


def release_alias(config: DatabaseConfiguration) -> None:
    """Unbind a chosen alias under which no connection was ever made."""
    _NAMES.release(config.alias, config.fingerprint)
