"""The benchmark's one model."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A row; each database holds a different number, so a count shows the database."""

    name = models.CharField(max_length=100)

    class Meta:
        """Labelled ``benchapp``."""

        app_label = "benchapp"

    def __str__(self) -> str:
        """Return the name."""
        return self.name
