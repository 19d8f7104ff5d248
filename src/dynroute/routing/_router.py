"""The database router Django consults; it reads the route stack of the caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed
from django.db import router

from dynroute import _switches
from dynroute.core import ASK, get_frame, walk
from dynroute.exceptions import ConfigurationError
from dynroute.replicas import Entry, groups
from dynroute.writes import get_scope, refuse_write

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.db.models import Model

__all__ = ["DynamicDbRouter", "forget_router_check", "installed", "require_router"]


class DynamicDbRouter:
    """Route queries made inside ``in_database`` blocks.

    Add it to settings, first if other routers should only see what no block
    decides::

        DATABASE_ROUTERS = ["dynroute.DynamicDbRouter"]

    Inside a block, reads and writes go where the block's policy says. Outside every
    block, and for a direction no active block routes, the router has no opinion
    (``None``): the routers after it, the instance's own database, then
    ``"default"`` decide, as if it were not installed.
    """

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:  # noqa: ANN401 - Django's hints are untyped
        """Return the alias reads of ``model`` go to in this context, or ``None``."""
        # The top frame's answer; a custom policy's through core's walk(). Every read.
        frame = get_frame()
        if frame is None:
            return None
        answer = frame[1]
        if answer is not ASK:
            return answer
        ask = frame[3]
        if type(ask) is Entry:  # a PrimaryReplica block: its answer needs no hints
            return ask.read(model)
        return walk(frame, model, hints, write=False)

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:  # noqa: ANN401 - Django's hints are untyped
        """Return the alias writes of ``model`` go to in this context, or ``None``.

        Raises:
            WriteForbiddenError: Writes are prevented here (``prevent_writes()``).
        """
        # As in db_for_read. Every write.
        frame = get_frame()
        alias: str | None = None
        if frame is not None:
            answer = frame[2]
            alias = answer if answer is not ASK else walk(frame, model, hints, write=True)
        if _switches.scopes_entered:  # no prevention scope ever entered: none to look up
            scope = get_scope()
            if scope is not None and scope[0]:
                refuse_write(model, hints, alias)
        return alias

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:  # noqa: ARG002, ANN401 - Django's router signature
        """Allow relations within a primary/replica group; else have no opinion (``None``).

        Objects read from a primary and from its replicas (any ``PrimaryReplica``
        made in this process) may be related: they hold the same data. Otherwise
        Django's rule applies: objects may be related only if they come from the same
        database, unless another router allows more. django-dynamic-db-router allowed
        every relation; see the README for how to keep that where the data really is
        the same.
        """
        first = obj1._state.db  # noqa: SLF001 - Django's model API
        group = groups().get(first) if first is not None else None
        if group is not None and obj2._state.db in group:  # noqa: SLF001
            return True
        return None

    def allow_migrate(
        self,
        db: str,  # noqa: ARG002 - Django's router signature
        app_label: str,  # noqa: ARG002
        model_name: str | None = None,  # noqa: ARG002
        **hints: Any,  # noqa: ARG002, ANN401
    ) -> bool | None:
        """Have no opinion on migrations: ``None``. Blocks do not route migrations."""
        return None


def installed(routers: Iterable[object]) -> bool:
    """Return whether ``routers`` (Django's router instances) include dynroute's."""
    return any(isinstance(each, DynamicDbRouter) for each in routers)


#: Whether dynroute's router is in DATABASE_ROUTERS, or None: not known since the
#: setting last changed.
_installed: bool | None = None


def require_router() -> None:
    """Refuse to route a block that no router would read.

    Without dynroute's router in ``DATABASE_ROUTERS``, Django never asks the route
    stack, and every query of a block goes where it would without the block.

    Raises:
        ConfigurationError: ``DATABASE_ROUTERS`` does not include ``DynamicDbRouter``.
    """
    global _installed  # noqa: PLW0603 - one answer per value of the setting
    if _installed is None:
        _installed = installed(router.routers)
    if not _installed:
        msg = (
            "in_database() routes through dynroute's router, which is not in "
            "settings.DATABASE_ROUTERS: every query of the block would go where it goes "
            'without it. Add "dynroute.DynamicDbRouter" to DATABASE_ROUTERS, first '
            "unless another router must decide before it: "
            'DATABASE_ROUTERS = ["dynroute.DynamicDbRouter", ...].'
        )
        raise ConfigurationError(msg)


def forget_router_check() -> None:
    """Check ``DATABASE_ROUTERS`` again at the next :func:`require_router`."""
    global _installed  # noqa: PLW0603 - see require_router
    _installed = None


def _recheck_blocks(*, setting: str, **kwargs: object) -> None:  # noqa: ARG001 - a signal receiver
    """When ``DATABASE_ROUTERS`` changes (a test's ``override_settings``), check it again.

    Blocks that skip their checks take them again on their next entry.
    """
    if setting == "DATABASE_ROUTERS":
        forget_router_check()
        _switches.rearm()


setting_changed.connect(_recheck_blocks, dispatch_uid="dynroute.routing._router._recheck_blocks")
