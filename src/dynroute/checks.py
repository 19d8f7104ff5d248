"""System checks of dynroute's settings (``manage.py check``): routers, replicas, middleware.

Registered when ``"dynroute"`` is in ``INSTALLED_APPS``:

- ``dynroute.E001``: dynroute's router is not in ``DATABASE_ROUTERS``, so blocks
  route nothing;
- ``dynroute.W002``: a router placed before dynroute's answers for every model, in
  one direction or both, so blocks never decide that direction;
- ``dynroute.W010``: a replica of a primary (``DYNROUTE_PRIMARY_REPLICA``, or any
  ``PrimaryReplica`` made by then) has no ``TEST: {"MIRROR": primary}``, so Django's
  test runner gives it an empty test database of its own;
- ``dynroute.E020``: ``DatabaseMiddleware`` comes before ``PrimaryReplicaMiddleware``
  in ``MIDDLEWARE``, so the primary/replica block is entered inside each tenant's and
  sends the tenant's queries to the shared primary and its replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.apps import apps as installed_apps
from django.conf import settings
from django.core import checks
from django.db import connections, router
from django.utils.module_loading import import_string

from dynroute.http import DatabaseMiddleware, PrimaryReplicaMiddleware
from dynroute.replicas import pairs
from dynroute.routing import DynamicDbRouter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.db.models import Model

__all__ = ["check_middleware_order", "check_replica_mirrors", "check_routers"]

_ADD = 'DATABASE_ROUTERS = ["dynroute.DynamicDbRouter", ...]'


def check_routers(
    app_configs: Sequence[object] | None = None,  # noqa: ARG001 - a check's signature
    **kwargs: object,  # noqa: ARG001
) -> list[checks.CheckMessage]:
    """Report a missing dynroute router, or one that routers before it always overrule."""
    routers: list[object] = list(router.routers)
    position = next(
        (index for index, each in enumerate(routers) if isinstance(each, DynamicDbRouter)),
        None,
    )
    if position is None:
        return [
            checks.Error(
                "dynroute's router is not in DATABASE_ROUTERS: in_database() blocks "
                "would route no query (entering one raises ConfigurationError).",
                hint=f'Add "dynroute.DynamicDbRouter" to DATABASE_ROUTERS: {_ADD}.',
                id="dynroute.E001",
            )
        ]
    models = installed_apps.get_models()
    return [
        warning
        for earlier in routers[:position]
        if (warning := _overruling(earlier, models)) is not None
    ]


def _overruling(earlier: object, models: Sequence[type[Model]]) -> checks.Warning | None:
    """Warn if ``earlier`` answers for every model in a direction, else ``None``."""
    if not models:
        return None
    directions = [
        direction
        for direction, method in (("reads", "db_for_read"), ("writes", "db_for_write"))
        if all(_answers(earlier, method, model) for model in models)
    ]
    if not directions:
        return None
    name = f"{type(earlier).__module__}.{type(earlier).__qualname__}"
    which = " and ".join(directions)
    return checks.Warning(
        f"{name} comes before dynroute's router in DATABASE_ROUTERS and decides the "
        f"{which} of every model: in_database() blocks never route them.",
        hint=(
            f'Move "dynroute.DynamicDbRouter" before {name}: Django asks routers in '
            "order, and dynroute's has no opinion outside blocks, so the other router "
            "still decides there."
        ),
        obj=name,
        id="dynroute.W002",
    )


def _answers(earlier: object, method: str, model: type[Model]) -> bool:
    """Whether ``earlier``'s ``method`` gives an alias for ``model`` outside any block."""
    decide = getattr(earlier, method, None)
    if decide is None:
        return False
    try:
        return bool(decide(model))
    except Exception:  # noqa: BLE001 - a router that needs hints must not break `check`
        return False


def check_replica_mirrors(
    app_configs: Sequence[object] | None = None,  # noqa: ARG001 - a check's signature
    **kwargs: object,  # noqa: ARG001
) -> list[checks.CheckMessage]:
    """Warn about replicas whose ``TEST`` settings do not mirror their primary."""
    known = set(pairs())
    configured: Any = getattr(settings, "DYNROUTE_PRIMARY_REPLICA", None)
    if isinstance(configured, dict):
        middleware = cast("dict[str, Any]", configured)
        replicas: Any = middleware.get("replicas")
        if isinstance(replicas, (list, tuple)):
            listed = cast("Sequence[object]", replicas)
            names = tuple(str(alias) for alias in listed)
            known.add((str(middleware.get("primary", "default")), names))
    # One warning per (primary, replica), however many groups list the replica.
    listed_pairs = sorted({(primary, replica) for primary, aliases in known for replica in aliases})
    warnings: list[checks.CheckMessage] = []
    for primary, replica in listed_pairs:
        config: Any = connections.settings.get(replica)
        if not isinstance(config, dict):
            continue  # not configured: entering a block says so
        database = cast("dict[str, Any]", config)
        test: Any = database.get("TEST") or {}
        if isinstance(test, dict):
            mirrored = cast("dict[str, Any]", test)
            if mirrored.get("MIRROR") == primary:
                continue
        warnings.append(
            checks.Warning(
                f"The replica {replica!r} of {primary!r} does not mirror it in tests: "
                "Django's test runner would give it an empty test database of its own, "
                "and reads routed to it would not see the rows tests write.",
                hint=(
                    f'Add "TEST": {{"MIRROR": {primary!r}}} to DATABASES[{replica!r}] '
                    "(and use TransactionTestCase where a test reads rows it wrote)."
                ),
                obj=replica,
                id="dynroute.W010",
            )
        )
    return warnings


def check_middleware_order(
    app_configs: Sequence[object] | None = None,  # noqa: ARG001 - a check's signature
    **kwargs: object,  # noqa: ARG001
) -> list[checks.CheckMessage]:
    """Report ``DatabaseMiddleware`` placed before ``PrimaryReplicaMiddleware``.

    Each middleware enters a block around the rest of the chain: the one listed later
    is the inner block, and decides. ``PrimaryReplicaMiddleware`` inside a tenant's
    block sends every query to the shared primary or its replicas, writes included.
    """
    positions: dict[type[object], int] = {}
    for index, path in enumerate(settings.MIDDLEWARE):
        try:
            found: object = import_string(str(path))
        except Exception:  # noqa: BLE001, S112 - another middleware failing to import is not this check's
            continue
        for kind in (DatabaseMiddleware, PrimaryReplicaMiddleware):
            if isinstance(found, type) and issubclass(found, kind):
                positions.setdefault(kind, index)
    tenant = positions.get(DatabaseMiddleware)
    replicas = positions.get(PrimaryReplicaMiddleware)
    if tenant is None or replicas is None or replicas < tenant:
        return []  # the replica block outside, a tenant's inside: the tenant's decides
    return [
        checks.Error(
            "DatabaseMiddleware comes before PrimaryReplicaMiddleware in MIDDLEWARE: the "
            "primary/replica block is entered inside each tenant's block, so a tenant's "
            "reads go to the shared replicas and its writes to the shared primary (with "
            "DYNROUTE_REQUEST_LOCK = True, every tenant request raises RouteLockedError).",
            hint=(
                'Put "dynroute.middleware.PrimaryReplicaMiddleware" before '
                '"dynroute.middleware.DatabaseMiddleware": requests with no tenant use the '
                "primary and its replicas, and a tenant's block, entered inside, decides "
                "its queries. To give tenants replicas, return a PrimaryReplica of the "
                "tenant's aliases from the resolver."
            ),
            obj="MIDDLEWARE",
            id="dynroute.E020",
        )
    ]
