"""The benchmark's two tables, in every database: a marker naming it, and notes.

The tables are made by ``bench/load.py`` (in a template database the others are
copied from), not by migrations: the models are unmanaged.
"""

from __future__ import annotations

from django.db import models


class Marker(models.Model):
    """The database's marker (a view): its name, and whether the server is a standby."""

    name = models.TextField()
    standby = models.BooleanField()

    class Meta:
        """A view over the marker row and ``pg_is_in_recovery()``."""

        managed = False
        db_table = "load_marker"

    def __str__(self) -> str:
        """Name the database, and its server if a standby."""
        return f"{self.name}{' (standby)' if self.standby else ''}"


class Note(models.Model):
    """A row a user writes, then reads back: ``tenant`` is where the user meant it to go."""

    token = models.UUIDField(unique=True)
    tenant = models.TextField()
    user = models.TextField(db_column="user_name")
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        """Made by ``bench/load.py``."""

        managed = False
        db_table = "load_note"

    def __str__(self) -> str:
        """The tenant, the user and the token."""
        return f"{self.tenant}/{self.user}/{self.token}"
