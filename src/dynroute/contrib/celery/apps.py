"""The app of the Celery integration: add ``"dynroute.contrib.celery"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig

from dynroute.contrib.celery import _pins

__all__ = ["CeleryPinsConfig"]


class CeleryPinsConfig(AppConfig):
    """Connects the receivers that carry pins into tasks; no models.

    Its label is not the last part of its name, ``celery``, which a project's own app
    may have.
    """

    name = "dynroute.contrib.celery"
    label = "dynroute_celery"
    verbose_name = "dynroute Celery integration"

    def ready(self) -> None:
        """Connect the receivers to Celery's signals (once, however often this runs)."""
        _pins.connect()
