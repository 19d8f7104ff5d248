"""``connections.settings`` while runtime aliases are registered: :class:`Published`.

Django reads ``connections.settings`` (which *is* ``settings.DATABASES``) from every
thread: ``connections[alias]`` looks an alias up, and ``close_old_connections`` and
``make_view_atomic`` iterate every alias on each request. Changing that dict in place
while another thread iterates it raises "dictionary changed size during iteration"
there (DJANGO_NOTES §2); a new dict per change costs time in the number of aliases.
So the first runtime alias replaces Django's dict with a :class:`Published` mapping,
which adds and removes aliases in constant time and iterates safely while they
change; when the last runtime alias goes, Django's own dict is put back.
``settings.DATABASES`` is never touched.

The registry (:mod:`dynroute.runtime._registry`) calls :func:`publish` and
:func:`withdraw` under its lock.
"""

from __future__ import annotations

from collections.abc import ItemsView, Mapping, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any, Final, cast, final

from django.db import connections

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Published", "current_settings", "publish", "withdraw"]

# The settings dict Django had before the first runtime alias; restored when the last
# one goes, so connections.settings is settings.DATABASES again when nothing runs.
_base_settings: dict[str, dict[str, Any]] | None = None


def current_settings() -> Mapping[str, dict[str, Any]]:
    """``connections.settings``: Django's dict, or a :class:`Published` (typed as a dict)."""
    return connections.settings


def publish(alias: str, settings: dict[str, Any], *, first: bool) -> None:
    """Make ``connections[alias]`` find ``settings``; ``first``: no runtime alias is published.

    ``settings`` is used as it is: give a fresh copy (Django stores and may change the
    entry it uses).
    """
    global _base_settings  # noqa: PLW0603 - module state guarded by the registry's lock
    current = current_settings()
    if type(current) is Published:
        published = current
    else:
        if first:
            _base_settings = connections.settings  # Django's own dict, put back at the end
        published = Published(current)
        # Django reads it as the dict it made: a Mapping with every method it calls.
        connections.settings = cast("dict[str, dict[str, Any]]", published)
    published.add(alias, settings)


def withdraw(alias: str, *, last: bool) -> None:
    """Make ``alias`` unknown to Django again; ``last``: no other runtime alias is published.

    When the last one goes and nothing else changed the aliases meanwhile, Django's own
    dict is put back.
    """
    published = current_settings()
    if type(published) is Published:
        published.remove(alias)
    else:  # replaced by someone else since it was registered: copy-on-write
        published = {name: value for name, value in published.items() if name != alias}
        connections.settings = published
    if (
        last
        and _base_settings is not None
        and published.keys() == _base_settings.keys()
        and all(published[name] is value for name, value in _base_settings.items())
    ):
        connections.settings = _base_settings


#: A removed alias's place in :class:`Published`'s order: never a key (a NUL in it).
_HOLE: Final = "\x00removed"


@final
class Published(MutableMapping[str, dict[str, Any]]):
    """``connections.settings`` while runtime aliases are registered.

    Other threads look aliases up and iterate them (``close_old_connections`` and
    ``make_view_atomic`` on every request) while blocks add and remove them. A dict
    changed in place raises "dictionary changed size during iteration" in them, and
    a new dict per change costs time in the number of aliases. Here lookups go to a
    dict and iteration to a list of the aliases in order: a list may grow under an
    iterator, and a removed alias leaves a hole there, skipped; when holes are half
    of it, a new list replaces it (iterators keep the old one). dynroute changes it
    under the module's lock; code that assigns into ``connections.databases`` (as
    django-dynamic-db-router and some test helpers do) changes it as it would the dict.
    """

    __slots__ = ("_entries", "_holes", "_order", "_places")

    def __init__(self, base: Mapping[str, dict[str, Any]]) -> None:
        self._entries = dict(base)
        self._order = list(self._entries)
        self._places = {alias: place for place, alias in enumerate(self._order)}
        self._holes = 0

    def __getitem__(self, alias: str) -> dict[str, Any]:
        return self._entries[alias]

    def __contains__(self, alias: object) -> bool:
        return alias in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        entries = self._entries
        # The list as it is now: a new one made later does not change this iteration.
        return (alias for alias in self._order if alias in entries)

    def items(self) -> ItemsView[str, dict[str, Any]]:
        """The (alias, settings) pairs, as iterating, never a removed alias's."""
        return PublishedItems(self)

    def values(self) -> ValuesView[dict[str, Any]]:
        """The settings, as iterating, never a removed alias's."""
        return PublishedValues(self)

    def pairs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Iterate (alias, settings); an alias removed meanwhile is skipped, not a KeyError."""
        entries = self._entries
        for alias in self._order:
            settings = entries.get(alias)
            if settings is not None:
                yield alias, settings

    def __repr__(self) -> str:
        return f"<dynroute's connections.settings: {', '.join(map(repr, self))}>"

    def __setitem__(self, alias: str, settings: dict[str, Any]) -> None:
        if alias in self._entries:
            self._entries[alias] = settings
        else:
            self.add(alias, settings)

    def __delitem__(self, alias: str) -> None:
        self.remove(alias)

    def add(self, alias: str, settings: dict[str, Any]) -> None:
        self._entries[alias] = settings
        self._places[alias] = len(self._order)
        self._order.append(alias)

    def remove(self, alias: str) -> None:
        del self._entries[alias]
        self._order[self._places.pop(alias)] = _HOLE
        self._holes += 1
        if self._holes > 16 and self._holes * 2 > len(self._order):
            self._order = list(self._entries)
            self._places = {name: place for place, name in enumerate(self._order)}
            self._holes = 0


class PublishedItems(ItemsView[str, dict[str, Any]]):
    """``Published.items()``: iterating looks each alias up once, as it goes."""

    __slots__ = ()
    _mapping: Published

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._mapping.pairs()


class PublishedValues(ValuesView[dict[str, Any]]):
    """``Published.values()``: as :class:`PublishedItems`."""

    __slots__ = ()
    _mapping: Published

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (settings for _, settings in self._mapping.pairs())
