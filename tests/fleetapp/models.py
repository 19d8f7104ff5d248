"""The fleet suite's model: a table each directory database gets from its migrations."""

from __future__ import annotations

from django.db import models


class Account(models.Model):
    """A row of one tenant's database."""

    name = models.CharField(max_length=100)
    note = models.CharField(max_length=100, default="")

    def __str__(self) -> str:
        return self.name
