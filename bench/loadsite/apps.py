"""The app of the load benchmark: its models, and the dynroute variant's signal counters."""

from __future__ import annotations

from django.apps import AppConfig

from loadsite.config import COUNT_EVICTIONS, VARIANT


class LoadsiteConfig(AppConfig):
    """Connects the counter of :mod:`loadsite.stats` in the dynroute variant."""

    name = "loadsite"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Count the runtime configurations dynroute closes, by reason, in files."""
        if VARIANT == "dynroute" and COUNT_EVICTIONS:
            from loadsite import stats  # noqa: PLC0415 - dynroute only in this variant

            stats.connect()
