"""dynroute.W010: `manage.py check` names a replica that would not mirror its primary in tests.

The router checks (dynroute.E001, W002) are with the router's requirement, in
tests/test_router_required.py.
"""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from dynroute.checks import check_replica_mirrors


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
