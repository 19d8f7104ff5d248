"""The benchmark's URLs: the sync views, or the async ones under ``LOAD_ASYNC=1``."""

from __future__ import annotations

from django.urls import path

from loadsite import views, views_async
from loadsite.config import ASYNC

chosen = views_async if ASYNC else views

urlpatterns = [
    path("health", chosen.health),
    path("tenant/read", chosen.tenant_read),
    path("tenant/write", chosen.tenant_write),
    path("tenant/note", chosen.tenant_note),
    path("shared/read", chosen.shared_read),
    path("shared/write", chosen.shared_write),
    path("shared/note", chosen.shared_note),
]
