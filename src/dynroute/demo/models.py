"""The demo's one model."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    """A row whose database shows where a query went."""

    text: models.CharField[str, str] = models.CharField(max_length=200)

    class Meta:
        """The demo app is ``dynroute.demo``, labelled ``demo``."""

        app_label = "demo"

    def __str__(self) -> str:
        """Return the note's text."""
        return self.text
