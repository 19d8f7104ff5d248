"""The benchmark's URLs: ``read/`` (GET) and ``write/`` (POST)."""

from __future__ import annotations

from django.urls import path

from benchapp import views

urlpatterns = [path("read/", views.read), path("write/", views.write)]
