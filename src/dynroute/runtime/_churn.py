"""Connection churn: saying so when the idle bound closes connections the worker still uses.

An idle configuration evicted over ``DYNROUTE_MAX_IDLE_CONNECTIONS`` costs a reconnect
when one of its blocks comes again. For a tenant not seen for a while, or seen once (a
loop over every tenant), that is the bound's purpose; for one whose next request comes
moments later, it is waste: when most evicted configurations are registered again soon
after, the bound is below what the worker reuses, and its requests pay a connection
each (throughput halved, measured with 20 tenants and 4 threads at a bound of 16).
Nothing else would say so: a WARNING in the ``dynroute`` logger does, at most once per
:data:`QUIET_SECONDS`, naming the setting and a value that would stop it. The watch
runs under the registry's lock and only composes the warning; the registry logs it
once the lock is released (a handler may do I/O).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ChurnWatch"]

#: A configuration registered again within this time of its eviction came back.
RECENT_SECONDS: Final = 60.0
#: Evictions are judged per window of this length, on this many of them at least.
WINDOW_SECONDS: Final = 60.0
MIN_EVICTIONS: Final = 20
#: At most one warning per process in this time.
QUIET_SECONDS: Final = 300.0
#: The evictions remembered, newest last (a loop over thousands of tenants).
_REMEMBERED: Final = 4096


_MESSAGE: Final = (
    "DYNROUTE_MAX_IDLE_CONNECTIONS (%d) is below the connections this worker reuses: "
    "%d of the last %d runtime configurations evicted were needed again within %d s, "
    "and connected again. Set DYNROUTE_MAX_IDLE_CONNECTIONS to %d or more (the "
    "server's max_connections must allow workers x (threads + that bound): see the "
    "tenants guide)."
)


class ChurnWatch:
    """Counts the evictions of a window and the configurations that come back after one.

    Called under the registry's lock: :meth:`evicted` for each eviction over the bound,
    :meth:`registered` for each configuration registered.
    """

    __slots__ = ("_back", "_came_back", "_evictions", "_gone", "_since", "_warned_at")

    def __init__(self) -> None:
        """Start with no window and no warning."""
        self._since: float | None = None
        self._evictions = 0
        self._came_back = 0
        #: The connections of each configuration that came back in this window.
        self._back: dict[str, int] = {}
        #: When each configuration was evicted, and its connections then.
        self._gone: dict[str, tuple[float, int]] = {}
        self._warned_at: float | None = None

    def evicted(self, alias: str, connections: int) -> None:
        """Note that ``alias``, holding ``connections`` idle connections, was evicted."""
        now = self._window()
        self._evictions += 1
        # Not remembered already: registered() forgets an alias registered again, and
        # only a registered configuration can be evicted.
        self._gone[alias] = (now, connections)
        if len(self._gone) > _REMEMBERED:
            del self._gone[next(iter(self._gone))]

    def registered(
        self, alias: str, bound: int, kept: Callable[[], Mapping[str, int]]
    ) -> tuple[object, ...] | None:
        """Note that ``alias`` was registered; if evicted ones keep coming back, the warning.

        ``kept`` gives the idle configurations kept now, with their connections: with
        the ones that came back, what the worker reuses.

        Returns:
            The arguments of the WARNING to log (``logger.warning(*returned)``), or
            ``None``.
        """
        gone = self._gone.pop(alias, None)
        if gone is None:
            return None
        now = self._window()
        evicted_at, connections = gone
        if now - evicted_at >= RECENT_SECONDS:
            return None
        self._came_back += 1
        self._back[alias] = connections
        if self._came_back < MIN_EVICTIONS or self._came_back * 2 <= self._evictions:
            return None
        if self._warned_at is not None and now - self._warned_at < QUIET_SECONDS:
            return None
        self._warned_at = now
        self._since = None  # a new window
        return (
            _MESSAGE,
            bound,
            self._came_back,
            self._evictions,
            RECENT_SECONDS,
            sum({**self._back, **kept()}.values()),
        )

    def _window(self) -> float:
        """The time now, starting a new window if the current one is over."""
        now = time.monotonic()
        if self._since is None or now - self._since > WINDOW_SECONDS:
            self._since, self._evictions, self._came_back = now, 0, 0
            self._back.clear()
        return now
