"""Routers users already have, accepted as policies; checked by mypy and pyright, never run."""

from __future__ import annotations

import random
from typing import Any

from django.db.models import Model
from typing_extensions import Unpack, assert_type

import dynamic_db_router
from dynroute import DynamicDbRouter, InDatabase, RoutingPolicy, in_database
from dynroute.typing import RoutingHints
from tests.typing.untyped_routers import AuthRouter


class PrimaryReplicaRouter:
    """Django's documentation's second router, annotated: ``model`` is not positional-only."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        return random.choice(["replica1", "replica2"])

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return "primary"

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        return True


class HintsAsObject:
    """Annotated more narrowly than Any: hints read as plain objects."""

    def db_for_read(self, model: type[Model], **hints: object) -> str | None:
        return None

    def db_for_write(self, model: type[Model], **hints: object) -> str | None:
        return "primary" if "instance" in hints else None


class PositionalOnly:
    """The README's form: ``model`` positional-only."""

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:
        return None

    def db_for_write(self, model: type[Model], /, **hints: Any) -> str | None:
        return None


class TypedHints:
    """Hints typed by their keys, as RoutingPolicy types them."""

    def db_for_read(self, model: type[Model], /, **hints: Unpack[RoutingHints]) -> str | None:
        return None

    def db_for_write(self, model: type[Model], /, **hints: Unpack[RoutingHints]) -> str | None:
        instance = hints.get("instance")
        return None if instance is None else instance._state.db


# Each is a RoutingPolicy and makes a block, whose alias may be None.
_policies: list[RoutingPolicy] = [
    AuthRouter(),
    PrimaryReplicaRouter(),
    HintsAsObject(),
    PositionalOnly(),
    DynamicDbRouter(),
    dynamic_db_router.DynamicDbRouter(),
]
assert_type(in_database(policy=AuthRouter()), InDatabase[str | None])
assert_type(in_database(policy=PrimaryReplicaRouter()), InDatabase[str | None])
assert_type(in_database(policy=HintsAsObject()), InDatabase[str | None])
assert_type(in_database(policy=PositionalOnly()), InDatabase[str | None])
assert_type(in_database(policy=DynamicDbRouter()), InDatabase[str | None])
assert_type(in_database(policy=dynamic_db_router.DynamicDbRouter()), InDatabase[str | None])


def ask(policy: RoutingPolicy, model: type[Model], instance: Model) -> str | None:
    """A policy is called as Django calls a router: with the model, then hints."""
    return policy.db_for_write(model, instance=instance) or policy.db_for_read(model)
