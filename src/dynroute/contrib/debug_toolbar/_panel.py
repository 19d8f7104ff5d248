"""``RoutingPanel``: the blocks a request entered and where each of its queries went."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import apps
from django.core import checks

from dynroute.contrib.debug_toolbar import _recording, _records

try:
    from debug_toolbar.panels import Panel
except ModuleNotFoundError as error:
    if (error.name or "").split(".", 1)[0] != "debug_toolbar":
        raise  # the toolbar is there, and fails for another reason
    msg = (
        "dynroute.contrib.debug_toolbar needs django-debug-toolbar: install it with "
        "`pip install django-dynroute[debug-toolbar]`."
    )
    raise ImportError(msg, name=error.name) from error

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

__all__ = ["RoutingPanel"]

_APP = "dynroute.contrib.debug_toolbar"


class RoutingPanel(Panel):
    """The routing of a request: its ``in_database`` blocks and each query's database.

    For each block entered: its policy, target alias, where it sends reads and
    writes, its depth and duration, whether it prevents writes, the replica a
    :class:`~dynroute.PrimaryReplica` block chose. For each statement: the database
    it went to, the block and the rule that sent it there (or "no block: Django's
    default"), whether writes were prevented and reads pinned to a primary, and the
    SQL with its placeholders (never the parameters). dynroute's events (runtime
    configurations registered and closed, replicas down, reads pinned) are listed
    too.

    It records only while the toolbar instruments a request: its receivers and its
    statement hook are installed by :meth:`enable_instrumentation` and removed by
    :meth:`disable_instrumentation`. Add ``"dynroute.contrib.debug_toolbar"`` to
    ``INSTALLED_APPS`` for its template.
    """

    is_async = True
    title = "Routing"
    template = "dynroute/debug_toolbar/routing.html"

    #: What this request's routing was (the toolbar makes a panel per request).
    _current: _records.Recording | None = None

    @property
    def nav_subtitle(self) -> str:
        """How many blocks were entered and queries made."""
        stats = self.get_stats()
        blocks = len(stats.get("blocks", ()))
        queries = len(stats.get("queries", ()))
        return (
            f"{blocks} block{'s' * (blocks != 1)}, {queries} quer{'ies' if queries != 1 else 'y'}"
        )

    def enable_instrumentation(self) -> None:
        """Start recording this request (idempotent)."""
        if self._current is None:
            self._current = _recording.start()

    def disable_instrumentation(self) -> None:
        """Stop recording: remove the receivers and hooks this request installed."""
        if self._current is not None:
            _recording.stop(self._current)

    def generate_stats(self, request: HttpRequest, response: HttpResponse) -> None:  # noqa: ARG002 - the toolbar's signature
        """Store what was recorded."""
        if self._current is not None:
            self.record_stats(self._current.stats())

    @classmethod
    def run_checks(cls) -> list[checks.CheckMessage]:
        """Check that the panel's app is installed (its template is found through it)."""
        if apps.is_installed(_APP):
            return []
        return [
            checks.Error(
                "RoutingPanel is in DEBUG_TOOLBAR_PANELS, but its app is not installed: "
                "its template would not be found.",
                hint=f'Add "{_APP}" to INSTALLED_APPS, after "debug_toolbar".',
                id="dynroute.E201",
            )
        ]
