"""A block needs dynroute's router: without it, entering fails instead of routing nothing.

And, with "dynroute" in INSTALLED_APPS, `manage.py check` says so (dynroute.E001), or
that a router before dynroute's decides everything (dynroute.W002).
"""

from __future__ import annotations

import asyncio

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections

from dynroute import DynamicDbRouter, ReadOnly, current_route, in_database
from dynroute.checks import check_middleware_order, check_replica_mirrors, check_routers
from dynroute.exceptions import ConfigurationError
from dynroute.runtime import active_aliases
from tests.testapp.models import Author, Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])

MISSING = (
    "in_database() routes through dynroute's router, which is not in "
    "settings.DATABASE_ROUTERS: every query of the block would go where it goes without "
    'it. Add "dynroute.DynamicDbRouter" to DATABASE_ROUTERS, first unless another router '
    'must decide before it: DATABASE_ROUTERS = ["dynroute.DynamicDbRouter", ...].'
)


class Custom:
    """A custom policy: reads go to other."""

    def db_for_read(self, model, /, **hints):
        return "other"

    def db_for_write(self, model, /, **hints):
        return None


class EverythingToOther:
    """A router that answers for every model, in both directions."""

    def db_for_read(self, model, **hints):
        return "other"

    def db_for_write(self, model, **hints):
        return "other"


class ReadsOfItems:
    """A router that answers reads of Item only."""

    def db_for_read(self, model, **hints):
        return "other" if model is Item else None


class AllButAuthors:
    """A router that answers for every model but one: it never overrules dynroute wholly."""

    def db_for_read(self, model, **hints):
        return None if model is Author else "other"

    db_for_write = db_for_read


class WritesOfEverything:
    """A router that answers writes of every model, and has no db_for_read."""

    def db_for_write(self, model, **hints):
        return "other"


class NeedsHints:
    """A router that fails without an instance hint: the check must survive it."""

    def db_for_read(self, model, **hints):
        return hints["instance"]._state.db

    db_for_write = db_for_read


@pytest.fixture(
    params=[
        pytest.param(lambda: in_database("other"), id="alias"),
        pytest.param(lambda: in_database(policy=Custom()), id="custom policy"),
        pytest.param(lambda: in_database(policy=ReadOnly("other")), id="strategy"),
    ]
)
def make_block(request):
    """Each kind of block: with an alias, a custom policy, a strategy."""
    return request.param


def test_entering_without_the_router_raises(settings, make_block):
    """No DynamicDbRouter in DATABASE_ROUTERS: entering fails, naming the fix."""
    settings.DATABASE_ROUTERS = []
    block = make_block()
    with pytest.raises(ConfigurationError) as raised:
        block.__enter__()
    assert str(raised.value) == MISSING
    assert current_route() is None


def test_async_entry_and_the_decorator_check_too(settings):
    """`async with` and a decorated function refuse in the same way."""
    settings.DATABASE_ROUTERS = ["tests.test_router_required.EverythingToOther"]

    async def enter() -> None:
        async with in_database("other"):
            pass  # pragma: no cover - never reached

    with pytest.raises(ConfigurationError, match="DATABASE_ROUTERS"):
        asyncio.run(enter())

    @in_database("other")
    def count() -> int:
        return Item.objects.count()  # pragma: no cover - never reached

    with pytest.raises(ConfigurationError, match="DATABASE_ROUTERS"):
        count()
    assert current_route() is None


def test_a_runtime_configuration_is_not_set_up_without_the_router(settings, runtime):
    """The check comes first: nothing is registered or connected."""
    settings.DATABASE_ROUTERS = []
    before = set(connections.settings)
    with pytest.raises(ConfigurationError), in_database(runtime):
        pass  # pragma: no cover - never reached
    assert set(connections.settings) == before
    assert not active_aliases()


def test_a_runtime_configuration_is_not_set_up_without_the_router_async(settings, runtime):
    """The same with `async with`, whose set-up runs in the async ORM's thread."""
    settings.DATABASE_ROUTERS = []
    before = set(connections.settings)

    async def enter() -> None:
        async with in_database(runtime):
            pass  # pragma: no cover - never reached

    with pytest.raises(ConfigurationError):
        asyncio.run(enter())
    assert set(connections.settings) == before
    assert not active_aliases()


def test_a_block_already_entered_is_checked_again_when_the_setting_changes(settings):
    """A block that passed the check once is checked again after DATABASE_ROUTERS changes."""
    block = in_database("other")
    with block:
        assert Item.objects.all().db == "other"
    settings.DATABASE_ROUTERS = []
    with pytest.raises(ConfigurationError):
        block.__enter__()
    settings.DATABASE_ROUTERS = ["dynroute.DynamicDbRouter"]
    with block:
        assert Item.objects.all().db == "other"


@pytest.mark.parametrize(
    "routers",
    [
        pytest.param(["dynamic_db_router.DynamicDbRouter"], id="the drop-in"),
        pytest.param(["dynamic_db_router.router.DynamicDbRouter"], id="the drop-in's module"),
        pytest.param([DynamicDbRouter()], id="an instance"),
        pytest.param(
            ["tests.test_router_required.ReadsOfItems", "dynroute.DynamicDbRouter"],
            id="after another router",
        ),
        pytest.param(
            ["tests.test_router_required.AllButAuthors", "dynroute.DynamicDbRouter"],
            id="after a router that answers for all models but one",
        ),
    ],
)
def test_any_form_of_the_router_is_enough(settings, routers):
    """The drop-in's router, an instance, or dynroute's after another router: all route."""
    settings.DATABASE_ROUTERS = routers
    with in_database(policy=Custom()):
        assert Author.objects.all().db == "other"
    assert check_routers() == []


def test_check_reports_a_missing_router(settings):
    """dynroute.E001 names the setting and the line to add."""
    settings.DATABASE_ROUTERS = ["tests.test_router_required.ReadsOfItems"]
    (error,) = check_routers()
    assert error == checks.Error(
        "dynroute's router is not in DATABASE_ROUTERS: in_database() blocks would route no "
        "query (entering one raises ConfigurationError).",
        hint='Add "dynroute.DynamicDbRouter" to DATABASE_ROUTERS: '
        'DATABASE_ROUTERS = ["dynroute.DynamicDbRouter", ...].',
        id="dynroute.E001",
    )


def test_manage_py_check_runs_it(settings):
    """With "dynroute" installed, `manage.py check` fails on E001."""
    # Database checks on "default" only: Django 6.1 runs them for the databases given,
    # and MariaDB's connects (the suite's other aliases are for the tests that use them).
    call_command("check", databases=["default"])  # the test settings are right
    settings.DATABASE_ROUTERS = []
    with pytest.raises(SystemCheckError, match=r"dynroute\.E001"):
        call_command("check", databases=["default"])


def test_check_warns_of_a_router_before_it_that_decides_everything(settings):
    """dynroute.W002: a router first that answers every model overrules every block."""
    settings.DATABASE_ROUTERS = [
        "tests.test_router_required.ReadsOfItems",
        "tests.test_router_required.EverythingToOther",
        "dynroute.DynamicDbRouter",
    ]
    (warning,) = check_routers()
    name = "tests.test_router_required.EverythingToOther"
    assert warning == checks.Warning(
        f"{name} comes before dynroute's router in DATABASE_ROUTERS and decides the reads "
        "and writes of every model: in_database() blocks never route them.",
        hint=f'Move "dynroute.DynamicDbRouter" before {name}: Django asks routers in order, '
        "and dynroute's has no opinion outside blocks, so the other router still decides "
        "there.",
        obj=name,
        id="dynroute.W002",
    )


def test_check_names_the_one_direction_overruled(settings):
    """Only writes are overruled; a router failing without hints, or after dynroute, is not."""
    settings.DATABASE_ROUTERS = [
        "tests.test_router_required.WritesOfEverything",
        "tests.test_router_required.NeedsHints",
        "dynroute.DynamicDbRouter",
        "tests.test_router_required.EverythingToOther",
    ]
    (warning,) = check_routers()
    assert "decides the writes of every model" in warning.msg
    assert warning.obj == "tests.test_router_required.WritesOfEverything"


def test_the_app_registers_the_checks_when_ready(monkeypatch):
    """Installing "dynroute" is what registers its checks (here, not at import): all of them."""
    from django.apps import apps  # noqa: PLC0415
    from django.core.checks.registry import registry  # noqa: PLC0415

    monkeypatch.setattr(registry, "registered_checks", set())
    assert registry.get_checks() == []
    apps.get_app_config("dynroute").ready()
    assert set(registry.get_checks()) == {
        check_routers,
        check_replica_mirrors,
        check_middleware_order,
    }
