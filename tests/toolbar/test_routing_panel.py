"""RoutingPanel without a browser: the toolbar's middleware, its store and the panel's HTML."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
import threading
from typing import Any

import pytest
from debug_toolbar.toolbar import DebugToolbar
from django.db import DatabaseError, connections, transaction
from django.db.backends.signals import connection_created
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

import dynroute
from dynroute import _switches
from dynroute.contrib.debug_toolbar import RoutingPanel, _recording, _statements
from tests.testapp.models import Item
from tests.toolbar import panel_html, urls

# Transactional: inside a test case's transaction on the primary, a PrimaryReplica
# block reads from the primary (as it should); these tests show its replica reads.
pytestmark = pytest.mark.django_db(
    transaction=True, databases=["default", "other", "replica1", "replica2"]
)


def request_id(response: Any) -> str:
    """The toolbar's id of the request a page was rendered for."""
    found = re.search(r'data-request-id="([^"]+)"', response.content.decode())
    assert found is not None, "the toolbar was not inserted in the page"
    return found[1]


def panel_content(url: str) -> str:
    """Get ``url`` with the toolbar shown; return the routing panel's HTML, as it loads it."""
    client = Client()
    response = client.get(url)
    assert response.status_code == 200
    rendered = client.get(
        "/__debug__/render_panel/",
        {"request_id": request_id(response), "panel_id": RoutingPanel.panel_id},
    )
    content: str = rendered.json()["content"]
    return content


def tenant_alias(settings: dict[str, Any]) -> str:
    """The alias dynroute registers the tenant's settings under."""
    return dynroute.in_database(settings, write=True).route.alias


def only(rows: list[dict[str, str]], **match: str) -> dict[str, str]:
    """The one row whose fields contain each of ``match``'s values."""
    found = [row for row in rows if all(value in row[name] for name, value in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def assert_nothing_installed() -> None:
    """No receiver, no statement hook: what a request without the toolbar costs."""
    assert not _switches.listening
    assert not _recording.listening()
    assert _statements.wrapped_connections() == 0
    for connection in connections.all(initialized_only=True):
        assert _statements.record_statement not in connection.execute_wrappers
    assert not any(key[0] == _recording._UID for key, *_ in connection_created.receivers if key), (
        "connection_created still has the panel's receiver"
    )


# Blocks and queries


def test_blocks_show_policy_alias_directions_depth_and_duration(tenant: dict[str, Any]) -> None:
    """The replica block and the tenant block, each with its target and what it routes."""
    blocks = panel_html.blocks(panel_content("/routed/"))
    assert len(blocks) == 2
    replica, tenant_block = blocks
    assert replica["policy"].startswith("PrimaryReplica('default', ('replica1',)")
    assert (replica["alias"], replica["reads"], replica["writes"]) == (
        "default",
        "replica1",
        "default",
    )
    assert "replica chosen: replica1" in replica["notes"]
    alias = tenant_alias(tenant)
    assert tenant_block["alias"] == alias
    assert tenant_block["policy"].startswith(
        f"ReadWrite(target=DatabaseConfiguration(alias='{alias}'"
    )
    assert (tenant_block["reads"], tenant_block["writes"]) == (alias, alias)
    assert "runtime configuration" in tenant_block["notes"]
    assert replica["depth"] == tenant_block["depth"] == "1"
    assert float(replica["duration"]) >= 0
    assert float(tenant_block["duration"]) >= 0


def test_each_query_shows_its_database_and_the_block_that_sent_it(tenant: dict[str, Any]) -> None:
    """Outside every block: Django's default; inside: the block's number, policy and rule."""
    content = panel_content("/routed/")
    blocks = panel_html.blocks(content)
    queries = panel_html.queries(content)
    alias = tenant_alias(tenant)
    outside = only(queries, sql="COUNT(")
    assert outside["alias"] == "default"
    assert outside["decided_by"] == "no block: Django's default"
    replica_read = only(queries, alias="replica1")
    assert replica_read["decided_by"] == f"block #{blocks[0]['number']}: PrimaryReplica"
    assert replica_read["rule"] == "PrimaryReplica: the replica chosen on entry"
    assert replica_read["replica"] == "replica1"
    assert replica_read["kind"] == "read"
    insert = only(queries, sql="INSERT")
    assert (insert["alias"], insert["kind"]) == (alias, "write")
    assert insert["decided_by"] == f"block #{blocks[1]['number']}: ReadWrite"
    assert insert["rule"] == "ReadWrite: writes"
    select = only(queries, alias=alias, kind="read")
    assert select["rule"] == "ReadWrite: reads"
    # The numbers follow the order of events: a block's queries come after it.
    assert int(blocks[0]["number"]) < int(replica_read["number"]) < int(blocks[1]["number"])


def test_a_write_inside_a_reading_block_is_the_enclosing_blocks(
    tenant: dict[str, Any],
) -> None:
    """Nested blocks: reads by the inner block, writes by the outer; .using() by none."""
    content = panel_content("/nested/")
    outer, inner = panel_html.blocks(content)
    assert (outer["policy"], outer["depth"]) == (
        "ReadWrite(target=DatabaseAlias(alias='other'))",
        "1",
    )
    assert (inner["policy"], inner["depth"]) == (
        "ReadOnly(target=DatabaseAlias(alias='replica2'))",
        "2",
    )
    queries = panel_html.queries(content)
    inner_read = only(queries, alias="replica2")
    assert inner_read["decided_by"] == f"block #{inner['number']}: ReadOnly"
    write = only(queries, sql="INSERT")
    assert write["alias"] == "other"
    assert write["decided_by"] == f"block #{outer['number']}: ReadWrite"
    using = only(queries, alias="replica1")
    assert using["decided_by"] == "not the block's database (replica1): .using(), or another router"


def test_a_write_pins_the_reads_and_the_panel_says_so() -> None:
    """After a write, the block's reads go to the primary: pinned, and the signal listed."""
    content = panel_content("/pinned/")
    queries = panel_html.queries(content)
    first, write, second = (row for row in queries if "testapp_item" in row["sql"])
    assert (first["alias"], first["pinned"]) == ("replica1", "")
    assert (write["alias"], write["rule"]) == ("default", "PrimaryReplica: writes to the primary")
    assert second["alias"] == "default"
    assert second["pinned"] == "default"
    assert second["rule"] == "PrimaryReplica: the primary, pinned after a write"
    events = panel_html.events(content)
    assert {"signal": "reads_pinned", "detail": "reads go to default (after a write)"} in [
        {"signal": row["signal"], "detail": row["detail"]} for row in events
    ]


def test_write_prevention_is_shown_on_blocks_and_queries() -> None:
    """prevent_writes() and a block's prevent_writes=True: its queries say writes are prevented."""
    content = panel_content("/prevented/")
    (block,) = panel_html.blocks(content)
    assert "prevents writes" in block["notes"]
    queries = panel_html.queries(content)
    assert [row["prevented"] for row in queries] == ["writes prevented"] * 2
    assert only(queries, alias="other")["decided_by"].startswith("block #")
    assert only(queries, alias="default")["decided_by"] == "no block: Django's default"


def test_the_panel_shows_no_password_and_no_parameter(tenant: dict[str, Any]) -> None:
    """A configuration's PASSWORD and a query's parameter appear nowhere: HTML or stored stats."""
    client = Client()
    response = client.get("/secret/")
    toolbar = DebugToolbar.fetch(request_id(response), RoutingPanel.panel_id)
    assert toolbar is not None
    stats = toolbar.get_panel_by_id(RoutingPanel.panel_id).get_stats()
    content = panel_content("/secret/")
    orm, raw = panel_html.queries(content)
    assert "%s" in orm["sql"]  # the placeholder, not the value
    assert "name = ?" in raw["sql"]  # a literal written into raw SQL: blanked
    (block,) = panel_html.blocks(content)
    assert "runtime configuration" in block["notes"]
    for shown in (content, json.dumps(stats)):
        assert urls.PASSWORD not in shown
        assert urls.PARAMETER not in shown


# Cost and clean-up


def probe(request: HttpRequest) -> JsonResponse:
    """Report whether the panel's receivers and hook are installed during the request."""
    return JsonResponse(
        {
            "listening": _switches.listening,
            "hooked": _statements.record_statement in connections["default"].execute_wrappers,
        }
    )


urlpatterns = [*urls.urlpatterns, path("probe/", probe)]


@override_settings(ROOT_URLCONF=__name__)
def test_receivers_and_hooks_exist_only_during_a_shown_request() -> None:
    """Installed by enable_instrumentation, removed by disable_instrumentation."""
    assert_nothing_installed()
    assert Client().get("/probe/").json() == {"listening": True, "hooked": True}
    assert_nothing_installed()


@override_settings(ROOT_URLCONF=__name__)
def test_a_request_without_the_toolbar_installs_nothing() -> None:
    """The toolbar not shown: no receiver, no hook, blocks take their usual path."""
    response = Client().get("/probe/", headers={"X-Hide-Toolbar": "1"})
    assert response.json() == {"listening": False, "hooked": False}
    assert_nothing_installed()


@override_settings(ROOT_URLCONF=__name__)
def test_a_request_with_the_panel_turned_off_installs_nothing() -> None:
    """The toolbar shown, the panel unchecked (the toolbar's cookie): nothing installed."""
    client = Client()
    client.cookies[f"djdt{RoutingPanel.panel_id}"] = "off"
    assert client.get("/probe/").json() == {"listening": False, "hooked": False}
    assert_nothing_installed()


def test_a_view_that_raises_leaves_nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """disable_instrumentation runs whatever the view does."""

    def failing(request: HttpRequest) -> None:
        msg = "the view failed"
        raise RuntimeError(msg)

    monkeypatch.setattr(urls, "urlpatterns", [path("fails/", failing), *urls.urlpatterns])
    with pytest.raises(RuntimeError, match="the view failed"):
        Client(raise_request_exception=True).get("/fails/")
    assert_nothing_installed()


def test_an_async_view_records_the_queries_of_the_orms_thread(tenant: dict[str, Any]) -> None:
    """ASGI: queries run in another thread by sync_to_async are recorded for the request."""
    response = asyncio.run(AsyncClient().get("/arouted/"))
    toolbar = DebugToolbar.fetch(request_id(response), RoutingPanel.panel_id)
    assert toolbar is not None
    content = toolbar.get_panel_by_id(RoutingPanel.panel_id).content
    queries = panel_html.queries(content)
    assert {row["alias"] for row in queries} >= {"default", "replica1", tenant_alias(tenant)}
    assert only(queries, alias="replica1")["rule"] == "PrimaryReplica: the replica chosen on entry"
    assert only(queries, sql="COUNT(")["decided_by"] == "no block: Django's default"
    assert len(panel_html.blocks(content)) == 2
    assert_nothing_installed()


# The recording, directly


def test_concurrent_recordings_do_not_mix() -> None:
    """Two requests recorded at once in two threads each see only their own queries."""
    barrier = threading.Barrier(2)
    seen: dict[str, set[str]] = {}
    failures: list[BaseException] = []

    def request(alias: str) -> None:
        try:
            recording = _recording.start()
            try:
                barrier.wait(timeout=5)
                with dynroute.in_database(alias):
                    list(Item.objects.all())
                barrier.wait(timeout=5)
            finally:
                _recording.stop(recording)
                connections.close_all()
            seen[alias] = {query.alias for query in recording.queries}
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=request, args=(alias,)) for alias in ("other", "replica2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert seen == {"other": {"other"}, "replica2": {"replica2"}}
    assert_nothing_installed()


def test_blocks_entered_before_the_recording_are_shown_as_such() -> None:
    """A block a middleware entered outside the toolbar's: listed first, its queries its own."""
    with dynroute.in_database("other"):
        recording = _recording.start()
        try:
            list(Item.objects.all())
        finally:
            _recording.stop(recording)
    (block,) = recording.blocks
    assert (block.early, block.alias, block.duration_ms) == (True, "other", None)
    (query,) = recording.queries
    assert query.block == block.number
    assert_nothing_installed()


def test_stopping_twice_and_enabling_twice_are_harmless() -> None:
    """The toolbar's instrumentation calls must be idempotent."""
    toolbar = DebugToolbar(HttpRequest(), lambda _: JsonResponse({}))
    panel = toolbar.get_panel_by_id(RoutingPanel.panel_id)
    panel.enable_instrumentation()
    panel.enable_instrumentation()
    panel.disable_instrumentation()
    panel.disable_instrumentation()
    assert_nothing_installed()


def test_a_user_execute_wrapper_block_does_not_pop_the_hook() -> None:
    """The hook goes first: a user's execute_wrapper() exit pops its own wrapper."""
    seen: list[str] = []

    def mine(execute: Any, sql: str, params: Any, many: Any, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    connection = connections["other"]
    with connection.execute_wrapper(mine):
        recording = _recording.start()
        try:
            with dynroute.in_database("other"):
                list(Item.objects.all())
        finally:
            _recording.stop(recording)
    assert mine not in connection.execute_wrappers
    assert len(seen) == len(recording.queries) == 1
    assert_nothing_installed()


# Set-up


def test_without_its_app_the_panel_reports_a_check_error() -> None:
    """Its template is found through the app: a missing app is a system check error."""
    assert RoutingPanel.run_checks() == []
    with override_settings(INSTALLED_APPS=["debug_toolbar", "dynroute", "tests.testapp"]):
        (error,) = RoutingPanel.run_checks()
    assert error.id == "dynroute.E201"
    assert '"dynroute.contrib.debug_toolbar"' in (error.hint or "")


class _NotInstalled:
    """An import finder for which django-debug-toolbar is not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", 1)[0] == "debug_toolbar":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_importing_without_the_toolbar_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without django-debug-toolbar: an ImportError that says what to install."""
    for name in [name for name in sys.modules if name.split(".")[0] == "debug_toolbar"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "dynroute.contrib.debug_toolbar")
    monkeypatch.delitem(sys.modules, "dynroute.contrib.debug_toolbar._panel")
    with pytest.raises(ImportError, match=re.escape("pip install django-dynroute[debug-toolbar]")):
        importlib.import_module("dynroute.contrib.debug_toolbar")


def test_the_package_exports_the_panel_only() -> None:
    """``__all__`` is sorted and names the public panel."""
    import dynroute.contrib.debug_toolbar as package  # noqa: PLC0415 - the module under test

    assert package.__all__ == sorted(package.__all__) == ["RoutingPanel"]
    assert package.RoutingPanel.__module__ == "dynroute.contrib.debug_toolbar._panel"


class _Anywhere:
    """A custom policy: reads to "other", no opinion on writes."""

    def db_for_read(self, model: Any, /, **hints: Any) -> str | None:
        return "other"

    def db_for_write(self, model: Any, /, **hints: Any) -> str | None:
        return None


def recorded(body: Any) -> _recording.Recording:
    """Run ``body`` while a request is recorded; return the recording."""
    recording = _recording.start()
    try:
        body()
    finally:
        _recording.stop(recording)
    return recording


def test_starting_a_recording_makes_no_connection_wrapper() -> None:
    """Only this thread's existing connections get the hook: no wrapper is made for others.

    A wrapper made for a runtime alias would outlive its unregistering, and reconnect
    later with the settings it was made with.
    """
    made: list[set[str]] = []

    def in_a_thread() -> None:
        made.append({c.alias for c in connections.all(initialized_only=True)})
        recorded(lambda: None)
        made.append({c.alias for c in connections.all(initialized_only=True)})

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert made == [set(), set()]


def test_a_custom_policy_is_shown_as_asked_per_query() -> None:
    """A policy with no fixed answer: its block decides, "asked per query"."""

    def body() -> None:
        with dynroute.in_database(policy=_Anywhere()):
            list(Item.objects.all())

    recording = recorded(body)
    (block,) = recording.blocks
    assert (block.reads, block.writes, block.alias) == ("asked per query", "asked per query", None)
    (query,) = recording.queries
    assert (query.alias, query.rule) == ("other", "_Anywhere: asked per query")


def test_use_primary_and_transactions_are_named_as_the_reason() -> None:
    """Reads of a PrimaryReplica block on the primary say why: use_primary(), a transaction."""

    def body() -> None:
        with dynroute.in_database(policy=urls.REPLICAS):
            with dynroute.use_primary():
                list(Item.objects.all())
            with transaction.atomic():
                list(Item.objects.all())

    recording = recorded(body)
    reads = [query for query in recording.queries if "testapp_item" in query.sql]
    assert [(query.alias, query.rule) for query in reads] == [
        ("default", "PrimaryReplica: the primary, inside use_primary()"),
        ("default", "PrimaryReplica: the primary, inside a transaction"),
    ]
    assert reads[0].pinned == "every primary (use_primary())"


def test_a_statement_that_fails_is_recorded_with_its_error() -> None:
    """The error's class is shown (never its message, which may hold values)."""

    def body() -> None:
        with pytest.raises(DatabaseError), connections["other"].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table WHERE name = %s", [urls.PARAMETER])

    (query,) = recorded(body).queries
    assert query.error == "OperationalError"
    assert query.decided_by == "no block: Django's default"
    assert urls.PARAMETER not in json.dumps(query.stats())
