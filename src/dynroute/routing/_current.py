"""What is routed here, now: for logs, assertions and code that must pass ``using=``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.db import router

from dynroute.core import get_frame
from dynroute.routing._block import InDatabase, Route
from dynroute.writes import prevent_writes

if TYPE_CHECKING:
    from django.db.models import Model

__all__ = ["current_alias", "current_route"]


def current_route() -> Route[str | None] | None:
    """Return the route of the innermost block active in this thread or task, or ``None``.

    It is what that block's ``with ... as route`` gave: ``route.alias`` is its
    target's alias (``None`` for a custom policy), ``route.policy`` its policy.
    """
    frame = get_frame()
    if frame is None:
        return None
    owner = frame[0]
    # Only blocks push frames; the check keeps the type honest at no measurable cost.
    if not isinstance(owner, InDatabase):
        return None
    block = cast("InDatabase[str | None]", owner)
    return block.route


def current_alias(model: type[Model], *, write: bool = False) -> str:
    """Return the database a query on ``model`` made here, now, would use.

    The answer of Django's routers in order (dynroute's among them, reading the
    active blocks), then Django's fallback, ``"default"``: one routing decision, as
    ``model.objects.all()`` (``write=False``) or ``model.objects.create()``
    (``write=True``) would make it, without hints.
    """
    if write:
        # Asking is not writing: inside prevent_writes(), the router would refuse.
        with prevent_writes(False):  # noqa: FBT003 - reads as "not preventing"
            return router.db_for_write(model)
    return router.db_for_read(model)
