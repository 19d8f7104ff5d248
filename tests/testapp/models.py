"""Models the tests route between databases."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    """A row whose presence shows which database a query went to."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Author(models.Model):
    """The target of a foreign key, for relation and instance-hint tests."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    """Holds a foreign key to :class:`Author`."""

    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)

    def __str__(self) -> str:
        return self.title


class MyModel(models.Model):
    """The model of django-dynamic-db-router's quickstart, field for field."""

    field_a = models.CharField(max_length=100)
    field_b = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.field_a
