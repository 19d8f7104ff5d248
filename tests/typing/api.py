"""What type checkers must accept and infer: checked by mypy and pyright, never run."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from django.db.models import Model
from django.db.transaction import Atomic
from typing_extensions import assert_never, assert_type

import dynamic_db_router
import dynroute
from dynroute import (
    DatabaseAlias,
    DatabaseConfiguration,
    DatabaseTarget,
    DynamicDbRouter,
    InDatabase,
    ReadOnly,
    ReadWrite,
    Route,
    RoutingPolicy,
    WriteOnly,
    in_database,
)
from dynroute.signals import block_exited, configuration_closed
from dynroute.typing import CloseReason, DatabaseSettings

if TYPE_CHECKING:
    from django.conf.global_settings import Router


class ByModel:
    """A custom policy: no base class, just the two methods."""

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:
        return "replica" if model.__name__.startswith("Report") else None

    def db_for_write(self, model: type[Model], /, **hints: object) -> str | None:
        return None


# Built-in strategies and plain classes satisfy the Protocol structurally.
_read_only: RoutingPolicy = ReadOnly("replica")
_read_write: RoutingPolicy = ReadWrite({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"})
_write_only: RoutingPolicy = WriteOnly(DatabaseAlias("primary"))
_custom: RoutingPolicy = ByModel()

# The router fits Django's DATABASE_ROUTERS as django-stubs types it.
_routers: list[str | Router] = ["dynroute.DynamicDbRouter", DynamicDbRouter()]

# Every accepted target kind; a block with a target has a str alias.
assert_type(in_database("replica"), InDatabase[str])
assert_type(in_database("replica", read=False, write=True), InDatabase[str])
assert_type(in_database(DatabaseAlias("replica")), InDatabase[str])
assert_type(in_database(policy=WriteOnly("replica")), InDatabase[str])
assert_type(in_database(policy=ByModel()), InDatabase[str | None])
settings: DatabaseSettings = {"ENGINE": "django.db.backends.postgresql", "NAME": "t", "PORT": 5432}
assert_type(in_database(settings, write=True, alias="tenant_1"), InDatabase[str])
loose = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db"}  # dict[str, str]
assert_type(in_database(loose), InDatabase[str])
assert_type(in_database(DatabaseConfiguration(loose, alias="x")), InDatabase[str])
assert_type(dynamic_db_router.in_database("external", True, True), InDatabase[str])


def sync_block() -> None:
    with in_database("replica") as route:
        assert_type(route, Route[str])
        assert_type(route.alias, str)
        assert_type(route.policy, RoutingPolicy)
    with in_database(policy=ReadWrite("replica")) as route:
        assert_type(route.alias, str)
    with in_database(policy=ByModel()) as custom:
        assert_type(custom.alias, str | None)


async def async_block() -> None:
    async with in_database({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}) as route:
        assert_type(route, Route[str])


def any_block(block: InDatabase) -> InDatabase[str | None]:
    """A bare InDatabase annotation accepts every block."""
    return block


_any: InDatabase = in_database("replica")


@in_database("replica")
def count_rows(table: str, *, limit: int = 10) -> int:
    return len(table) + limit


@in_database("replica", write=True)
async def fetch_name(pk: int) -> str:
    return str(pk)


def decorated_functions_keep_their_signatures() -> None:
    assert_type(count_rows("t"), int)
    assert_type(count_rows("t", limit=3), int)
    pending = assert_type(fetch_name(1), Coroutine[Any, Any, str])
    pending.close()


async def decorated_coroutines_stay_awaitable() -> None:
    assert_type(await fetch_name(1), str)


def describe(target: DatabaseTarget) -> str:
    """DatabaseTarget is a closed union: match is exhaustive with two cases."""
    match target:
        case DatabaseAlias(alias=alias):
            return alias
        case DatabaseConfiguration(alias=alias):
            return alias
        case _:
            assert_never(target)


# dynroute.atomic and on_commit have Django's signatures.
@dynroute.atomic
def _bare(x: int) -> str:
    return str(x)


@dynroute.atomic(durable=True)
def _with_arguments(x: int) -> str:
    return str(x)


assert_type(_bare(1), str)
assert_type(_with_arguments(1), str)
assert_type(dynroute.atomic(), Atomic)
assert_type(dynroute.atomic("other", savepoint=False), Atomic)
assert_type(dynroute.on_commit(lambda: None, robust=True), None)


# prevent_writes: a context manager and a decorator that keeps signatures.
@dynroute.prevent_writes()
def _report(x: int) -> str:
    return str(x)


@dynroute.prevent_writes(False)
async def _areport(x: int) -> str:
    return str(x)


assert_type(_report(1), str)
_pending = assert_type(_areport(1), Coroutine[Any, Any, str])
_pending.close()
assert_type(dynroute.prevent_writes(), dynroute.PreventWrites)
assert_type(in_database("replica", prevent_writes=True), InDatabase[str])
assert_type(in_database(policy=ByModel(), prevent_writes=True), InDatabase[str | None])


# Primary and replicas.
_replicas = dynroute.PrimaryReplica("default", ("replica1", "replica2"))
assert_type(in_database(policy=_replicas), InDatabase[str])
assert_type(dynroute.PrimaryReplica("default", ["r"], choose="random"), dynroute.PrimaryReplica)
assert_type(
    dynroute.PrimaryReplica(replicas=("r",), choose=lambda up: up[0]), dynroute.PrimaryReplica
)
assert_type(dynroute.use_primary(), dynroute.UsePrimary)


def primary_route() -> str:
    with in_database(policy=_replicas) as route:
        return route.alias


@dynroute.use_primary
def _view(x: int) -> str:
    return str(x)


@dynroute.use_primary()
async def _aview(x: int) -> str:
    return str(x)


assert_type(_view(1), str)
_later = assert_type(_aview(1), Coroutine[Any, Any, str])
_later.close()

# unlocked(): the route lock of DatabaseMiddleware lifted

assert_type(dynroute.unlocked(), dynroute.Unlocked)


@dynroute.unlocked
def _unlocked_view(x: int) -> str:
    return str(x)


@dynroute.unlocked()
async def _aunlocked_view(x: int) -> str:
    return str(x)


assert_type(_unlocked_view(1), str)
_unlocked_later = assert_type(_aunlocked_view(1), Coroutine[Any, Any, str])
_unlocked_later.close()

# Signals: Django signals, connected as usual; the closing reason is a Literal.


_timings: list[tuple[str | None, float]] = []


def _on_exit(sender: object, route: Route, duration: float, **kwargs: object) -> None:
    _timings.append((route.alias, duration))


def _on_close(sender: object, alias: str, reason: CloseReason, **kwargs: object) -> None:
    if reason == "eviction":
        _timings.append((alias, 0.0))


block_exited.connect(_on_exit)
configuration_closed.connect(_on_close, dispatch_uid="closing")
assert_type(configuration_closed.disconnect(dispatch_uid="closing"), bool)
