"""The database router Django consults; it reads the route stack of the caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dynroute._state import decide_read, decide_write

if TYPE_CHECKING:
    from django.db.models import Model

__all__ = ["DynamicDbRouter"]


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
        return decide_read(model, hints)

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:  # noqa: ANN401 - Django's hints are untyped
        """Return the alias writes of ``model`` go to in this context, or ``None``."""
        return decide_write(model, hints)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:  # noqa: ARG002, ANN401 - Django's router signature
        """Have no opinion on relations: ``None``.

        Django's rule then applies: objects may be related only if they come from the
        same database, unless another router allows more (a primary/replica router,
        for example). django-dynamic-db-router allowed every relation; see the README
        for how to keep that where the data really is the same.
        """
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
