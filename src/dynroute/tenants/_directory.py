"""The directory of databases: ``settings.DYNROUTE_DATABASES``, names for every database.

::

    DYNROUTE_DATABASES = "tenants.directory.databases"

names a callable (or an iterable, or a mapping) that gives ``(name, target)`` pairs,
or a mapping of names to targets. A target is what ``in_database()`` takes (an alias
from ``settings.DATABASES``, a settings-style dict, a ``DatabaseAlias`` or
``DatabaseConfiguration``), or a function of no argument returning one: resolved
when first needed, so a directory of thousands of databases can be listed without
building each one's settings.

Names are what commands (``manage.py dynroute ...``), logs, signals and task headers
speak: a settings dict, with its password, never leaves the process. A name follows
the rules of an alias (a non-empty ``str``, no leading ``_``, not a URL).

:func:`load` reads the directory afresh (a command's start: tenants come and go);
:func:`current` keeps it until ``DYNROUTE_DATABASES`` changes (``setting_changed``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from dynroute.core import DatabaseAlias, DatabaseConfiguration, check_alias, to_target
from dynroute.exceptions import ConfigurationError, DynrouteError, UnknownDatabaseError

if TYPE_CHECKING:
    from dynroute.core import DatabaseTarget

__all__ = ["SETTING", "Directory", "current", "database_named", "load", "reloaded", "server_of"]

SETTING: Final = "DYNROUTE_DATABASES"


class Directory:
    """The databases of ``settings.DYNROUTE_DATABASES``, by name, in the order given."""

    __slots__ = ("_aliases", "_given", "_lock", "_targets")

    def __init__(self, entries: Iterable[tuple[str, object]]) -> None:
        """Check the names; keep each target as given until it is needed.

        Raises:
            ConfigurationError: A name is not a ``str`` that can name a database, or
                appears twice.
        """
        given: dict[str, object] = {}
        for name, target in entries:
            try:
                check_alias(name, what="name in settings.DYNROUTE_DATABASES")
            except DynrouteError as error:
                raise ConfigurationError(str(error)) from None
            if name in given:
                msg = f"settings.{SETTING} gives the name {name!r} twice; names must be unique."
                raise ConfigurationError(msg)
            given[name] = target
        self._given = given
        self._targets: dict[str, DatabaseTarget] = {}
        self._aliases: dict[str, str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """Show how many databases, never their settings."""
        return f"<Directory of {len(self._given)} databases>"

    def __len__(self) -> int:
        """How many databases the directory names."""
        return len(self._given)

    def __contains__(self, name: object) -> bool:
        """Whether the directory names ``name``."""
        return name in self._given

    def names(self) -> list[str]:
        """Every name, in the directory's order."""
        return list(self._given)

    def target(self, name: str) -> DatabaseTarget:
        """The target of ``name``, resolved (and kept) on first use.

        Raises:
            UnknownDatabaseError: The directory has no such name.
            ConfigurationError: Its target is of no accepted kind (the message says
                which name, never the settings).
        """
        try:
            return self._targets[name]
        except KeyError:
            pass
        try:
            given = self._given[name]
        except KeyError:
            msg = f"{name!r} is not a name in settings.{SETTING}."
            raise UnknownDatabaseError(msg) from None
        try:
            function = _function(given)
            target = to_target(given if function is None else function())
        except DynrouteError as error:
            msg = f"settings.{SETTING}: the target of {name!r} is refused: {error}"
            raise ConfigurationError(msg) from None
        with self._lock:
            return self._targets.setdefault(name, target)

    def name_of(self, alias: str) -> str | None:
        """The name whose target has ``alias`` (a runtime configuration's), if any.

        The first call resolves every target (lazy ones too), once.
        """
        aliases = self._aliases
        if aliases is None:
            found: dict[str, str] = {}
            for name in self._given:
                try:
                    found.setdefault(self.target(name).alias, name)
                except ConfigurationError:  # noqa: PERF203 - once per directory
                    continue  # a target refused is no database's name
            aliases = self._aliases = found
        return aliases.get(alias)

    def select(self, only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[str]:
        """The names of ``only`` (all by default) less ``exclude``, in directory order.

        Raises:
            UnknownDatabaseError: ``only`` or ``exclude`` gives a name the directory
                does not have (all such names in the message).
        """
        wanted = None if only is None else list(only)
        left_out = list(exclude)
        unknown = [n for n in (*(wanted or ()), *left_out) if n not in self._given]
        if unknown:
            msg = f"Not names in settings.{SETTING}: {', '.join(map(repr, unknown))}."
            raise UnknownDatabaseError(msg)
        chosen = self._given if wanted is None else set(wanted)
        dropped = set(left_out)
        return [name for name in self._given if name in chosen and name not in dropped]


def _function(value: object) -> Callable[[], object] | None:
    """A lazy target's function (``None``: ``value`` is the target itself)."""
    if callable(value) and not isinstance(value, (str, Mapping)):
        return cast("Callable[[], object]", value)
    return None


def load() -> Directory:
    """Read ``settings.DYNROUTE_DATABASES`` afresh.

    Raises:
        ConfigurationError: The setting is missing, cannot be imported, or gives
            something other than a mapping or ``(name, target)`` pairs.
    """
    path = getattr(settings, SETTING, None)
    if path is None:
        msg = (
            f"settings.{SETTING} is not set: name a function that gives your databases, "
            f'as in {SETTING} = "tenants.directory.databases".'
        )
        raise ConfigurationError(msg)
    if not isinstance(path, str):
        msg = f"settings.{SETTING} must be a dotted path (str), got {type(path).__name__}."
        raise ConfigurationError(msg)
    try:
        given: object = import_string(path)
    except ImportError as error:
        msg = f"settings.{SETTING} = {path!r} cannot be imported: {error}"
        raise ConfigurationError(msg) from None
    function = _function(given)
    return Directory(_pairs(given if function is None else function(), path))


def _pairs(given: object, path: str) -> Iterable[tuple[str, object]]:
    """The ``(name, target)`` pairs of what the setting's path gave."""
    kind = type(given).__name__
    if isinstance(given, Mapping):
        return cast("Mapping[str, object]", given).items()
    if isinstance(given, Iterable) and not isinstance(given, (str, bytes)):
        pairs: list[tuple[str, object]] = []
        for item in cast("Iterable[object]", given):
            if not (isinstance(item, tuple) and len(cast("tuple[object, ...]", item)) == 2):
                break
            pairs.append(cast("tuple[str, object]", item))
        else:
            return pairs
    msg = (
        f"settings.{SETTING} = {path!r} gave a {kind}: it must give a "
        "mapping of names to targets, or (name, target) pairs, or a function returning "
        "either."
    )
    raise ConfigurationError(msg)


_current: Directory | None = None
_current_lock = threading.Lock()


def current() -> Directory:
    """The directory, read once and again after ``DYNROUTE_DATABASES`` changes."""
    global _current  # noqa: PLW0603 - the cache the setting_changed receiver clears
    directory = _current
    if directory is None:
        with _current_lock:
            directory = _current = _current or load()
    return directory


def _forget(*, setting: str, **kwargs: object) -> None:  # noqa: ARG001 - a receiver's signature
    global _current  # noqa: PLW0603
    if setting == SETTING:
        _current = None


setting_changed.connect(_forget, dispatch_uid="dynroute.directory")


def database_named(name: str) -> DatabaseTarget:
    """The target ``settings.DYNROUTE_DATABASES`` gives ``name``: for a resolver, a block.

    ::

        def database_for(request):                  # DYNROUTE_REQUEST_ROUTE
            return database_named(request.tenant_name)

    A name the cached directory lacks is looked for again in the directory read afresh
    (a tenant added since).

    Raises:
        UnknownDatabaseError: Neither has it.
        ConfigurationError: ``DYNROUTE_DATABASES`` is missing or wrong, or the name's
            target is refused.
    """
    entries = current()
    if name not in entries:
        entries = reloaded()
    return entries.target(name)


#: A name the directory lacks reads it again at most this often (a client sending
#: made-up tenant names must not make every request read the whole directory).
RELOAD_SECONDS: Final = 1.0
_reloaded_at = -RELOAD_SECONDS


def reloaded() -> Directory:
    """The directory read afresh and kept (the current one if read in the last second).

    See :data:`RELOAD_SECONDS`.
    """
    global _current, _reloaded_at  # noqa: PLW0603 - the cache, replaced
    with _current_lock:
        now = time.monotonic()
        if _current is not None and now - _reloaded_at < RELOAD_SECONDS:
            return _current
        _reloaded_at = now
    fresh = load()
    with _current_lock:
        _current = fresh
    return fresh


def server_of(target: DatabaseTarget) -> str:
    """Which server ``target``'s database lives on: its vendor, host and port.

    What the per-server limit counts by, and what a summary may show: never a
    password, a user or a database name. SQLite databases are one server, ``sqlite``.
    """
    if isinstance(target, DatabaseConfiguration):
        entry: Mapping[str, object] = target.settings
    else:
        alias: DatabaseAlias = target
        entry = cast("Mapping[str, object]", settings.DATABASES.get(alias.alias, {}))
    engine = str(entry.get("ENGINE", ""))
    vendor = engine.rsplit(".", 1)[-1]
    if vendor in {"sqlite3", "spatialite"}:
        return "sqlite"
    host = str(entry.get("HOST") or "localhost")
    port = str(entry.get("PORT") or "")
    return f"{vendor}://{host}:{port}" if port else f"{vendor}://{host}"
