"""Routers as a project's existing, unannotated code writes them (Django's docs).

This module stands for code that is not type-checked strictly, so its functions may
stay unannotated; ``routers.py`` uses them under strict checking.
"""
# mypy: allow-untyped-defs
# pyright: basic

from __future__ import annotations


class AuthRouter:
    """The router of Django's "Multiple databases" documentation, verbatim."""

    route_app_labels = {"auth", "contenttypes"}  # noqa: RUF012 - verbatim from the docs

    def db_for_read(self, model, **hints):
        if model._meta.app_label in self.route_app_labels:
            return "auth_db"
        return None

    def db_for_write(self, model, **hints):
        if model._meta.app_label in self.route_app_labels:
            return "auth_db"
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return None
