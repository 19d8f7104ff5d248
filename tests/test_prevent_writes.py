"""prevent_writes(): every write of a thread or task refused, before it reaches a server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection, connections, router
from django.db.backends.signals import connection_created
from django.test.utils import CaptureQueriesContext

from dynroute import ReadWrite, _switches, in_database, prevent_writes
from dynroute.exceptions import RouteStateError, UsageError, WriteForbiddenError
from dynroute.writes import _hook
from tests.testapp.models import Author, Book, Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])

ADVICE = (
    ". Write outside the prevent_writes() block, or inside prevent_writes(False) to allow "
    "it on purpose."
)


def orm_refusal(label: str, alias: str) -> str:
    """The message of a write refused where the router is asked."""
    return (
        f"Writes are prevented here (prevent_writes()): refused a write of {label} to "
        f"database {alias!r}, before any SQL{ADVICE}"
    )


def sql_refusal(alias: str, words: str) -> str:
    """The message of a statement refused at the connection."""
    return (
        f"Writes are prevented here (prevent_writes()): refused a statement on database "
        f"{alias!r}: {words!r}{ADVICE}"
    )


def _nothing():
    return None


# name: (a read made before, outside the scope; the write, given what the read returned)
WRITES = {
    "save() of a new object": (_nothing, lambda _: Item(name="new").save()),
    "save() of an object read from other": (
        lambda: Item.objects.using("other").get(),
        lambda item: item.save(),
    ),
    "create()": (_nothing, lambda _: Item.objects.create(name="new")),
    "get_or_create()": (_nothing, lambda _: Item.objects.get_or_create(name="kept")),
    "update_or_create()": (
        _nothing,
        lambda _: Item.objects.update_or_create(name="kept", defaults={"name": "x"}),
    ),
    "bulk_create()": (_nothing, lambda _: Item.objects.bulk_create([Item(name="new")])),
    "bulk_update()": (
        lambda: list(Item.objects.all()),
        lambda items: Item.objects.bulk_update(items, ["name"]),
    ),
    "update()": (_nothing, lambda _: Item.objects.update(name="x")),
    "delete()": (_nothing, lambda _: Item.objects.all().delete()),
    "delete() of an object": (Item.objects.get, lambda item: item.delete()),
    "select_for_update()": (_nothing, lambda _: list(Item.objects.select_for_update())),
    "a related manager's create()": (
        Author.objects.get,
        lambda author: author.book_set.create(title="t"),
    ),
}


@pytest.fixture
def data():
    """An item in each database, and an author."""
    Item.objects.create(name="kept")
    Item.objects.using("other").create(name="kept in other")
    Author.objects.create(name="Ada")


def contents() -> dict[str, list[str]]:
    """The item names in each database, read with .using()."""
    return {
        alias: sorted(Item.objects.using(alias).values_list("name", flat=True))
        for alias in ("default", "other")
    }


@pytest.mark.parametrize(("read", "write"), WRITES.values(), ids=WRITES.keys())
def test_orm_writes_are_refused_before_any_sql(data, read, write):
    """Where Django asks the router for a write database, nothing is sent."""
    before = contents()
    found = read()
    with (
        CaptureQueriesContext(connections["default"]) as on_default,
        CaptureQueriesContext(connections["other"]) as on_other,
        prevent_writes(),
        pytest.raises(WriteForbiddenError),
    ):
        write(found)
    assert on_default.captured_queries == []
    assert on_other.captured_queries == []
    assert contents() == before
    assert Book.objects.count() == 0


def test_the_message_names_the_model_and_where_it_would_have_gone(data):
    """The database is the one the write would have gone to, instance hint included."""
    with prevent_writes():
        with pytest.raises(WriteForbiddenError) as raised:
            Item.objects.create(name="x")
        assert str(raised.value) == orm_refusal("testapp.Item", "default")
        item = Item.objects.using("other").get()
        with pytest.raises(WriteForbiddenError) as raised:
            item.save()
        assert str(raised.value) == orm_refusal("testapp.Item", "other")
        with in_database("other", write=True), pytest.raises(WriteForbiddenError) as raised:
            Author.objects.create(name="x")
        assert str(raised.value) == orm_refusal("testapp.Author", "other")


def test_reads_are_allowed(data):
    """ORM reads, raw querysets and SELECTs through a cursor go through."""
    with prevent_writes():
        assert Item.objects.count() == 1
        assert Item.objects.get().name == "kept"
        assert Item.objects.filter(name="kept").exists()
        assert [i.name for i in Item.objects.raw("SELECT * FROM testapp_item")] == ["kept"]
        with in_database("other"):
            assert Item.objects.get().name == "kept in other"
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM testapp_item WHERE name = %s", ["kept"])
            assert [tuple(row) for row in cursor.fetchall()] == [("kept",)]


def test_a_statement_is_refused_naming_its_first_words_never_its_values(data):
    """Neither the parameters nor literals in the SQL appear in the message."""
    with prevent_writes(), connection.cursor() as cursor:
        with pytest.raises(WriteForbiddenError) as raised:
            cursor.execute("UPDATE testapp_item SET name = %s", ["s3cret-param"])
        assert str(raised.value) == sql_refusal("default", "UPDATE testapp_item SET ...")
        with pytest.raises(WriteForbiddenError) as raised:
            cursor.execute("INSERT INTO testapp_item (name) VALUES ('s3cret-literal')")
        assert str(raised.value) == sql_refusal("default", "INSERT INTO testapp_item ...")
        with pytest.raises(WriteForbiddenError) as raised:
            cursor.executemany("UPDATE testapp_item SET name = %s", [["s3cret-many"]])
        assert "s3cret" not in str(raised.value)
        with pytest.raises(WriteForbiddenError) as raised:
            cursor.execute("SELECT 's3cret'; DELETE FROM testapp_item")
        assert str(raised.value) == sql_refusal("default", "DELETE FROM testapp_item")
    assert contents()["default"] == ["kept"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_writes_that_skip_dynroutes_router_are_refused_at_the_connection(settings, data):
    """A router before dynroute's decides the write: the SQL hook still refuses it.

    (Outside a test's transaction: a refusal there marks the transaction for rollback,
    as any database error inside Django's write methods does.)
    """
    settings.DATABASE_ROUTERS = ["tests.test_router.EverythingToOther", "dynroute.DynamicDbRouter"]
    with prevent_writes(), pytest.raises(WriteForbiddenError) as raised:
        Item.objects.create(name="x")
    assert str(raised.value).startswith(
        "Writes are prevented here (prevent_writes()): refused a statement on database "
        "'other': 'INSERT INTO"
    )
    with prevent_writes(), pytest.raises(WriteForbiddenError):
        Item.objects.using("default").filter(name="kept").update(name="x")  # .using() too
    assert contents() == {"default": ["kept"], "other": ["kept in other"]}


def test_prevent_writes_false_allows_again_and_scopes_nest(data):
    """prevent_writes(False) inside allows again; each scope restores the one around it."""
    with prevent_writes():
        with prevent_writes(False):  # noqa: FBT003 - the API reads this way
            Item.objects.create(name="allowed")
            with prevent_writes(), pytest.raises(WriteForbiddenError):
                Item.objects.create(name="refused")
            Item.objects.create(name="allowed again")
        with pytest.raises(WriteForbiddenError):
            Item.objects.create(name="refused")
    Item.objects.create(name="after")
    assert contents()["default"] == ["after", "allowed", "allowed again", "kept"]


def test_in_database_prevent_writes_is_a_block_inside_prevent_writes(data):
    """Routed reads, refused writes, and both restored when the block exits."""
    with in_database("other", prevent_writes=True) as route:
        assert route.alias == "other"
        assert Item.objects.get().name == "kept in other"
        with pytest.raises(WriteForbiddenError):
            Item.objects.create(name="x")
    with in_database(policy=ReadWrite("other"), prevent_writes=True):
        with pytest.raises(WriteForbiddenError) as raised:
            Item.objects.create(name="x")
        assert str(raised.value) == orm_refusal("testapp.Item", "other")
    Item.objects.create(name="after")
    assert contents() == {"default": ["after", "kept"], "other": ["kept in other"]}
    assert repr(in_database("other", prevent_writes=True)) == (
        "in_database(policy=ReadOnly(target=DatabaseAlias(alias='other')), prevent_writes=True)"
    )


class ToOther:
    """A custom policy: asked per query, it sends everything to "other"."""

    def db_for_read(self, model, /, **hints):
        return "other"

    def db_for_write(self, model, /, **hints):
        return "other"


def test_a_block_on_a_custom_policy_with_prevent_writes_refuses_its_writes(data):
    """The policy is asked and answers "other", for reads and writes: the write is refused."""
    with in_database(policy=ToOther(), prevent_writes=True):
        assert Item.objects.get().name == "kept in other"
        with pytest.raises(WriteForbiddenError) as raised:
            Item.objects.create(name="x")
        assert str(raised.value) == orm_refusal("testapp.Item", "other")
    assert contents() == {"default": ["kept"], "other": ["kept in other"]}


def test_a_block_whose_scope_an_outer_prevent_writes_ended_says_so_on_exit(data):
    """prevent_writes() left before a block with prevent_writes=True entered inside it.

    Leaving the scope ends the block's scope too (entered inside it); the block's exit
    then says it was not left innermost first, and its route is gone all the same.
    """
    outer = prevent_writes()
    outer.__enter__()
    block = in_database("other", prevent_writes=True)
    block.__enter__()
    outer.__exit__(None, None, None)
    with pytest.raises(RouteStateError, match="innermost first"):
        block.__exit__(None, None, None)
    assert Item.objects.get().name == "kept"  # the default database again


def test_a_block_without_prevention_is_a_different_block(data):
    """The block cache never hands a preventing block to a call without the flag."""
    with in_database("other", prevent_writes=True):
        pass
    with in_database("other", write=True):
        Item.objects.create(name="written")
    with in_database("other", write=True, prevent_writes=True), pytest.raises(WriteForbiddenError):
        Item.objects.create(name="refused")
    assert contents()["other"] == ["kept in other", "written"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_decorators_sync_and_async(data):
    """Decorated sync and async functions run in the scope; generators are refused."""

    @prevent_writes()
    def write() -> None:
        Item.objects.create(name="x")

    @in_database("other", prevent_writes=True)
    async def awrite() -> None:
        await Item.objects.acreate(name="x")

    @prevent_writes()
    async def aread() -> int:
        return await Item.objects.acount()

    with pytest.raises(WriteForbiddenError):
        write()
    with pytest.raises(WriteForbiddenError):
        asyncio.run(awrite())
    assert asyncio.run(aread()) == 1
    with pytest.raises(UsageError, match="cannot decorate the generator function"):
        prevent_writes()(lambda: (yield))  # type: ignore[arg-type]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_async_with_follows_the_task_into_the_async_orm():
    """The scope is per task: one task prevented, its sibling not."""

    async def prevented() -> str:
        async with prevent_writes():
            await asyncio.sleep(0)
            try:
                await Item.objects.acreate(name="refused")
            except WriteForbiddenError:
                pass
            else:
                return "written"
            try:
                await sync_to_async(_raw_delete)()
            except WriteForbiddenError:
                return "refused"
            return "deleted"

    async def free() -> str:
        await asyncio.sleep(0)
        await Item.objects.acreate(name="free")
        return "written"

    async def main() -> list[str]:
        return list(await asyncio.gather(prevented(), free()))

    assert asyncio.run(main()) == ["refused", "written"]
    assert contents()["default"] == ["free"]


def _raw_delete() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM testapp_item")


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_another_thread_is_not_prevented():
    """A thread started inside the scope has its own context: its writes go through."""
    errors: list[BaseException] = []

    def write() -> None:
        try:
            Item.objects.create(name="from a thread")
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    with prevent_writes():
        worker = threading.Thread(target=write)
        worker.start()
        worker.join(timeout=30)
        assert router.db_for_read(Item) == "default"
    assert errors == []
    assert contents()["default"] == ["from a thread"]


def test_a_users_execute_wrapper_never_disables_it(data):
    """Their wrapper runs after the hook, with Django's arguments; when it ends, the hook stays."""
    seen: list[str] = []
    calls: list[tuple[bool, object]] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        calls.append((many, context["connection"]))
        return execute(sql, params, many, context)

    with prevent_writes():
        pass  # the hook is installed
    with connection.execute_wrapper(spy), connection.cursor() as cursor:
        cursor.executemany("UPDATE testapp_item SET name = %s WHERE name = %s", [["kept", "kept"]])
        cursor.execute("SELECT 1")
    assert calls == [(True, connection), (False, connection)]
    seen.clear()

    with prevent_writes(), connection.execute_wrapper(spy), connection.cursor() as cursor:
        with pytest.raises(WriteForbiddenError):
            cursor.execute("DELETE FROM testapp_item")
        assert seen == []
        cursor.execute("SELECT 1")
    assert connection.execute_wrappers[0] is _hook.write_hook
    assert _hook.write_hook in connection.execute_wrappers
    assert spy not in connection.execute_wrappers
    with prevent_writes(), pytest.raises(WriteForbiddenError):
        _raw_delete()


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_connection_opened_inside_a_users_execute_wrapper_keeps_the_hook():
    """The hook installed while a user's wrapper is active survives its pop (read-only #180)."""
    with prevent_writes():
        pass  # installed from now on
    outcome: list[object] = []

    def work() -> None:
        try:
            with connection.execute_wrapper(lambda execute, *args: execute(*args)):
                Item.objects.count()  # connects here: the hook goes in first
            outcome.append(connection.execute_wrappers[:])
            with prevent_writes():
                _raw_delete()
        except WriteForbiddenError:
            outcome.append("refused")
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=30)
    assert outcome == [[_hook.write_hook], "refused"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_the_hook_is_installed_once_per_process(monkeypatch):
    """After the first use, no later scope looks for connections again (a scan of the heap)."""
    monkeypatch.setattr(_switches, "hook_installed", False)  # as in a new process
    with prevent_writes():
        pass  # installs the hook (again: installing twice changes nothing)

    def scan_again() -> list[object]:
        msg = "the hook was installed already: no scan needed"
        raise AssertionError(msg)

    monkeypatch.setattr(_hook.gc, "get_objects", scan_again)
    with prevent_writes():
        pass
    with in_database(policy=ReadWrite("other"), prevent_writes=True):
        pass


def test_connections_opened_before_the_first_use_get_the_hook(monkeypatch):
    """A connection already open in another thread, as if before dynroute was imported."""
    connection_created.disconnect(_hook.install)
    monkeypatch.setattr(_switches, "hook_installed", False)
    opened = threading.Event()
    go = threading.Event()
    outcome: list[object] = []

    def work() -> None:
        try:
            Item.objects.count()
            if _hook.write_hook in connection.execute_wrappers:
                connection.execute_wrappers.remove(_hook.write_hook)
            opened.set()
            assert go.wait(timeout=30)
            with prevent_writes():
                _raw_delete()
            outcome.append("deleted")
        except WriteForbiddenError:
            outcome.append("refused")
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    assert opened.wait(timeout=30)
    with prevent_writes():  # the first use, here
        pass
    go.set()
    worker.join(timeout=30)
    assert outcome == ["refused"]


def test_misuse(db):
    """A non-bool flag, a scope left where it is not active; the exception's family."""
    with pytest.raises(UsageError) as raised:
        prevent_writes("yes")  # type: ignore[arg-type]
    assert str(raised.value) == "prevent_writes(enabled) must be True or False, got str."
    with pytest.raises(UsageError) as raised:
        in_database("other", prevent_writes=1)  # type: ignore[call-overload]
    assert str(raised.value) == "in_database(prevent_writes=...) must be True or False, got int."
    with in_database("other", prevent_writes=False):
        Item.objects.create(name="allowed")
    scope = prevent_writes()
    with pytest.raises(RouteStateError) as raised_state:
        scope.__exit__(None, None, None)
    assert str(raised_state.value) == (
        "prevent_writes() was left without being active here: a block must be left in the "
        "thread or task that entered it, once per entry, innermost first."
    )
    assert repr(prevent_writes(False)) == "prevent_writes(False)"  # noqa: FBT003
    assert isinstance(WriteForbiddenError("x"), DatabaseError)


def test_a_preventing_block_dropped_with_its_enclosing_block_stops_preventing(data, caplog):
    """Left while still active inside an outer block: its prevention goes with it."""
    with in_database("default"):
        in_database("other", prevent_writes=True).__enter__()  # never left
        with pytest.raises(WriteForbiddenError):
            Item.objects.create(name="refused")
    assert "dropped with it" in caplog.text
    Item.objects.create(name="allowed")
    assert contents()["default"] == ["allowed", "kept"]


def test_a_runtime_configuration_block_that_prevents_writes(runtime):
    """Set up and torn down as usual; reads work, writes are refused, then allowed."""
    from dynroute.runtime import active_aliases  # noqa: PLC0415

    with in_database(runtime, write=True, prevent_writes=True) as route:
        assert Item.objects.count() == 0
        with pytest.raises(WriteForbiddenError) as raised:
            Item.objects.create(name="x")
        assert f"database {route.alias!r}" in str(raised.value)
    assert not active_aliases()
    with in_database(runtime, write=True):
        Item.objects.create(name="allowed")
        assert Item.objects.count() == 1


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_runtime_configuration_block_that_prevents_writes_async(runtime):
    """The same with `async with`: prevention follows the task into the async ORM."""

    async def main() -> str:
        async with in_database(runtime, write=True, prevent_writes=True):
            assert await Item.objects.acount() == 0
            try:
                await Item.objects.acreate(name="x")
            except WriteForbiddenError:
                return "refused"
            return "written"

    assert asyncio.run(main()) == "refused"
    Item.objects.create(name="allowed")  # prevention ended with the block


def test_scopes_left_out_of_order_restore_what_was_before_the_outer_one(data):
    """Leaving an outer scope first drops the inner one; leaving that later is an error."""
    outer, inner = prevent_writes(), prevent_writes(False)  # noqa: FBT003
    outer.__enter__()
    inner.__enter__()
    Item.objects.create(name="allowed inside")
    outer.__exit__(None, None, None)  # inner still active: dropped with it
    Item.objects.create(name="allowed after")
    with pytest.raises(RouteStateError):
        inner.__exit__(None, None, None)
    with prevent_writes(), pytest.raises(WriteForbiddenError):
        Item.objects.create(name="refused")
    assert contents()["default"] == ["allowed after", "allowed inside", "kept"]


def test_a_dropped_block_whose_scope_is_already_gone(data, caplog):
    """An enclosing scope's exit dropped the block's scope first: no error when it goes."""
    scope = prevent_writes()
    with in_database("default"):
        scope.__enter__()
        in_database("other", prevent_writes=True).__enter__()  # never left
        scope.__exit__(None, None, None)  # drops the block's scope
    assert "dropped with it" in caplog.text
    Item.objects.create(name="allowed")


class Composed:
    """A driver's composed statement, as psycopg's ``sql`` objects: rendered for a connection."""

    def __init__(self, rendered: object) -> None:
        self.rendered = rendered
        self.rendered_for: list[object] = []

    def as_string(self, context: object) -> object:
        """The statement's text, quoted for ``context`` (the driver's connection)."""
        self.rendered_for.append(context)
        return self.rendered


@pytest.mark.parametrize(
    "statement",
    [b"DELETE FROM testapp_item", Composed(b"DELETE FROM testapp_item")],
    ids=["bytes", "composed into bytes"],
)
def test_a_statement_that_is_not_a_string_is_refused(data, statement: object):
    """Bytes, or anything the hook cannot read, never reach the driver."""
    with (
        prevent_writes(),
        connection.cursor() as cursor,
        pytest.raises(WriteForbiddenError) as raised,
    ):
        cursor.execute(statement)
    assert str(raised.value) == sql_refusal("default", "(a statement that is not a string)")
    assert contents()["default"] == ["kept"]


def test_a_composed_statement_is_read_as_rendered_for_its_connection(data):
    """A composed statement is classified by the text it renders for the driver's connection.

    As psycopg's sql objects, which quote with the connection's encoding and adapters.
    """
    statement = Composed("DELETE FROM testapp_item")
    with (
        prevent_writes(),
        connection.cursor() as cursor,
        pytest.raises(WriteForbiddenError) as raised,
    ):
        cursor.execute(statement)
    assert str(raised.value) == sql_refusal("default", "DELETE FROM testapp_item")
    assert statement.rendered_for == [connection.connection]
    assert contents()["default"] == ["kept"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's sql.Composable")
def test_a_psycopg_composed_statement_is_read_as_sql(data):
    """psycopg.sql objects are classified by their text."""
    from psycopg import sql  # noqa: PLC0415 - PostgreSQL only

    table = sql.Identifier("testapp_item")
    with prevent_writes(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        assert cursor.fetchone()[0] == 1
        with pytest.raises(WriteForbiddenError) as raised:
            cursor.execute(sql.SQL("DELETE FROM {}").format(table))
    assert str(raised.value) == sql_refusal("default", 'DELETE FROM "testapp_item"')


def test_a_preventing_block_prevents_at_every_entry(data):
    """The same block object, entered again, prevents again; InDatabase alone does not."""
    from dynroute import InDatabase, ReadOnly  # noqa: PLC0415

    block = in_database("other", prevent_writes=True)
    for _ in range(2):
        with block, pytest.raises(WriteForbiddenError):
            Item.objects.create(name="refused")
    with InDatabase(ReadOnly("other")):
        Item.objects.create(name="allowed")
    assert contents()["default"] == ["allowed", "kept"]


def test_the_first_scope_of_the_process_turns_the_routers_check_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until a scope is entered the router skips its lookup; the first one turns it on."""
    monkeypatch.setattr(_switches, "scopes_entered", False)
    with prevent_writes(), pytest.raises(WriteForbiddenError) as refused:
        Item.objects.create(name="new")
    assert str(refused.value) == orm_refusal("testapp.Item", "default")
    assert _switches.scopes_entered
