"""System checks: replicas that would not mirror (W010), middlewares that would misroute (E020).

dynroute.W010 names a replica that would not mirror its primary in tests; E020, the
middlewares in an order that sends a tenant's queries elsewhere.

The router checks (dynroute.E001, W002) are with the router's requirement, in
tests/test_router_required.py.
"""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from dynroute.checks import check_middleware_order, check_replica_mirrors
from dynroute.middleware import DatabaseMiddleware


def about(alias: str) -> list[checks.CheckMessage]:
    """The W010 warnings about ``alias``, among those of every primary of the process."""
    return [warning for warning in check_replica_mirrors() if warning.obj == alias]


def test_a_replica_of_the_middleware_setting_is_warned_with_the_fix() -> None:
    """Its primary is "default" unless the setting names one; the hint gives the line to add."""
    with override_settings(DYNROUTE_PRIMARY_REPLICA={"replicas": ["other"]}):
        warnings = about("other")
    assert warnings == [
        checks.Warning(
            "The replica 'other' of 'default' does not mirror it in tests: Django's test "
            "runner would give it an empty test database of its own, and reads routed to it "
            "would not see the rows tests write.",
            hint="""Add "TEST": {"MIRROR": 'default'} to DATABASES['other'] (and use """
            "TransactionTestCase where a test reads rows it wrote).",
            obj="other",
            id="dynroute.W010",
        )
    ]


def test_a_replica_missing_from_databases_is_left_to_the_block_and_the_next_one_checked() -> None:
    """An alias not in DATABASES gets no warning (entering a block names it); the rest do."""
    setting = {"primary": "replica1", "replicas": ["missing", "other"]}
    with override_settings(DYNROUTE_PRIMARY_REPLICA=setting):
        assert about("missing") == []
        assert [warning.msg.split(":")[0] for warning in about("other")] == [
            "The replica 'other' of 'replica1' does not mirror it in tests"
        ]


def test_manage_py_check_reports_it() -> None:
    """With "dynroute" installed, `manage.py check` runs the mirror check too."""
    with (
        override_settings(DYNROUTE_PRIMARY_REPLICA={"replicas": ["other"]}),
        pytest.raises(SystemCheckError, match=r"other: \(dynroute\.W010\)"),
    ):
        call_command("check", fail_level="WARNING")


# The order of the middlewares

TENANTS = "dynroute.middleware.DatabaseMiddleware"
REPLICAS = "dynroute.middleware.PrimaryReplicaMiddleware"
DJANGO = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


class TenantMiddleware(DatabaseMiddleware):
    """A project's own DatabaseMiddleware, named by its own path."""


def test_the_tenant_middleware_before_the_replica_middleware_is_an_error() -> None:
    """The replica block would be entered inside each tenant's: E020, with the order to use."""
    with override_settings(MIDDLEWARE=[*DJANGO, TENANTS, REPLICAS]):
        (error,) = check_middleware_order()
    assert error.id == "dynroute.E020"
    assert error.level == checks.ERROR
    assert error.obj == "MIDDLEWARE"
    assert error.msg == (
        "DatabaseMiddleware comes before PrimaryReplicaMiddleware in MIDDLEWARE: the "
        "primary/replica block is entered inside each tenant's block, so a tenant's "
        "reads go to the shared replicas and its writes to the shared primary (with "
        "DYNROUTE_REQUEST_LOCK = True, every tenant request raises RouteLockedError)."
    )
    assert error.hint == (
        f'Put "{REPLICAS}" before "{TENANTS}": requests with no tenant use the primary and '
        "its replicas, and a tenant's block, entered inside, decides its queries. To give "
        "tenants replicas, return a PrimaryReplica of the tenant's aliases from the resolver."
    )


@pytest.mark.parametrize(
    "middleware",
    [
        pytest.param([*DJANGO, REPLICAS, TENANTS], id="replicas first"),
        pytest.param([REPLICAS], id="replicas alone"),
        pytest.param([TENANTS], id="tenants alone"),
        pytest.param([*DJANGO], id="neither"),
        pytest.param(
            [TENANTS, "no.such.Middleware", REPLICAS][1:], id="a path that does not import"
        ),
    ],
)
def test_the_replica_middleware_first_or_either_alone_is_fine(middleware: list[str]) -> None:
    """Only the one order that misroutes is reported."""
    with override_settings(MIDDLEWARE=middleware):
        assert check_middleware_order() == []


def test_a_projects_own_subclass_counts_as_the_middleware() -> None:
    """A subclass of DatabaseMiddleware, named by its own path, is placed as the original."""
    with override_settings(MIDDLEWARE=[f"{__name__}.TenantMiddleware", REPLICAS]):
        assert [error.id for error in check_middleware_order()] == ["dynroute.E020"]


def test_manage_py_check_fails_on_the_misrouting_order() -> None:
    """`manage.py check` runs it, and an error fails the command."""
    with (
        override_settings(MIDDLEWARE=[TENANTS, REPLICAS]),
        pytest.raises(SystemCheckError, match=r"MIDDLEWARE: \(dynroute\.E020\)"),
    ):
        call_command("check")
