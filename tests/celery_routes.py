"""A Celery app and a tenant view that enqueues, for tests/test_celery_routes.py.

The same module is the app of a real worker process (``celery -A tests.celery_routes
worker``), which sets Django up with tests.settings and the Celery integration
installed (``DYNROUTE_TEST_CELERY=1``). Tenants are directory names
(``DYNROUTE_DATABASES``, tests/fleet.py); ``?tenant=NAME`` picks one.
"""

from __future__ import annotations

import os

import django
from django.apps import apps

if not apps.ready:  # in the worker process; pytest has set Django up already
    django.setup()

from celery import Celery
from django.http import HttpRequest, JsonResponse
from django.urls import path

from dynroute import DatabaseTarget, database_named
from tests.testapp.models import Item


def make_app(broker: str, backend: str, queue: str) -> Celery:
    """An app on ``broker``, with the task ``record``."""
    made = Celery("dynroute-routes", set_as_current=False)
    made.conf.update(
        broker_url=broker,
        result_backend=backend,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @made.task(name="record", shared=False)
    def record(label: str) -> list[str]:
        """Write an Item, and list the Items of the database the task's queries go to."""
        Item.objects.create(name=label)
        return sorted(Item.objects.values_list("name", flat=True))

    return made


_URL = os.environ.get("DYNROUTE_TEST_REDIS_URL")
#: The app: the worker process's (on Redis), or, in pytest, one on the in-memory broker
#: until a test swaps it (``celery_routes.app = make_app(...)``).
app = make_app(
    _URL or "memory://",
    _URL or "cache+memory://",
    os.environ.get("DYNROUTE_TEST_CELERY_QUEUE", "dynroute-routes"),
)


def tenant(request: HttpRequest) -> DatabaseTarget:
    """The resolver (``DYNROUTE_REQUEST_ROUTE``): ``?tenant=NAME`` in the directory."""
    return database_named(request.GET["tenant"])


def enqueue(request: HttpRequest) -> JsonResponse:
    """Enqueue ``record`` inside the tenant's request; the task's id."""
    return JsonResponse({"id": app.tasks["record"].delay(request.GET["label"]).id})


urlpatterns = [path("enqueue", enqueue)]
