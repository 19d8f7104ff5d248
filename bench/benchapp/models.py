"""The benchmark's models: rows to count, and notes a POST writes."""

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


class Note(models.Model):
    """A row a POST writes (its own table, so the counts of ``Item`` never change)."""

    text = models.CharField(max_length=100)

    class Meta:
        """Labelled ``benchapp``."""

        app_label = "benchapp"

    def __str__(self) -> str:
        """Return the text."""
        return self.text
