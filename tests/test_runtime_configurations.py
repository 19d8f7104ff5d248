"""Runtime configurations: a settings dict set up on block entry and torn down on exit."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import threading

import django
import pytest
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from django.conf import settings
from django.db import OperationalError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dynroute import DatabaseAlias, DatabaseConfiguration, in_database
from dynroute.exceptions import ConfigurationError, DatabaseConnectionError, InvalidTargetError
from dynroute.runtime import active_aliases
from tests.runtime import BACKEND, FailingClose, minimal_settings, names, sessions
from tests.testapp.models import Item, MyModel

pytestmark = pytest.mark.django_db(databases=["default", "other"])


@pytest.fixture(params=["dynroute", "dynamic_db_router"])
def module_in_database(request, settings):
    """``in_database`` from each import, with that module's router installed."""
    settings.DATABASE_ROUTERS = [f"{request.param}.DynamicDbRouter"]
    return importlib.import_module(request.param).in_database


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread hops async blocks make, by the function each runs in the ORM's thread."""
    from dynroute.runtime import _async  # noqa: PLC0415 - the module under test

    made: list[str] = []
    real = _async.in_orm_thread

    async def counted(function, config, **kwargs):
        made.append(function.__name__)
        return await real(function, config, **kwargs)

    monkeypatch.setattr(_async, "in_orm_thread", counted)
    return made


def seed(runtime, *item_names):
    """Put items in the runtime database through a block."""
    with in_database(runtime, write=True):
        for name in item_names:
            Item.objects.create(name=name)


def test_a_dict_with_only_engine_and_name_works(runtime, module_in_database):
    """{'ENGINE', 'NAME'} is enough: Django's defaults are filled in (no KeyError)."""
    seed(runtime, "a", "b")
    with module_in_database(minimal_settings(runtime)):
        assert sorted(Item.objects.values_list("name", flat=True)) == ["a", "b"]


def test_write_true_writes_to_the_runtime_database(runtime, module_in_database):
    """write=True sends writes there; nothing lands in default."""
    with module_in_database(runtime, write=True):
        MyModel.objects.create(field_a="runtime", field_b=1)
        Item.objects.create(name="runtime")
    assert names(runtime) == ["runtime"]
    assert not Item.objects.using("default").exists()


def test_write_false_writes_to_default(runtime, module_in_database):
    """write=False: reads from the runtime database, writes to default."""
    seed(runtime, "there")
    with module_in_database(runtime):
        assert Item.objects.count() == 1
        Item.objects.create(name="here")
    assert names(runtime) == ["there"]
    assert list(Item.objects.using("default").values_list("name", flat=True)) == ["here"]


def test_a_decorator_on_a_dict_works_on_every_call(runtime, module_in_database):
    """The old package failed on the second call; every call works here."""

    @module_in_database(runtime, write=True)
    def add(name):
        Item.objects.create(name=name)
        return Item.objects.count()

    assert [add("a"), add("b"), add("c")] == [1, 2, 3]
    assert names(runtime) == ["a", "b", "c"]


def test_databases_are_back_to_what_they_were_after_every_block(runtime, module_in_database):
    """connections.databases returns to its state after each block, also one that raised."""
    before = dict(connections.databases)
    with module_in_database(runtime):
        assert len(connections.databases) == len(before) + 1
    assert connections.databases == before

    @module_in_database(runtime, write=True)
    def fail() -> None:
        Item.objects.create(name="x")
        raise LookupError

    with pytest.raises(LookupError):
        fail()
    assert connections.databases == before
    assert connections.databases is settings.DATABASES


def test_settings_databases_is_never_mutated(runtime):
    """The alias is published in a new dict; settings.DATABASES keeps its keys throughout."""
    original = settings.DATABASES
    keys = set(original)
    with in_database(runtime) as route:
        assert route.alias in connections.databases
        assert route.alias not in settings.DATABASES
        assert set(original) == keys
    assert settings.DATABASES is original


def test_registration_happens_on_entry_not_construction(runtime):
    """Building a block registers nothing; entering does; leaving withdraws it."""
    block = in_database(runtime)
    alias = block.route.alias
    assert alias not in connections.databases
    with block:
        assert alias in connections.databases
        assert router.db_for_read(Item) == alias
    assert alias not in connections.databases


def test_route_alias_names_the_runtime_alias_for_using(runtime):
    """route.alias is the registered name, usable with .using() inside the block."""
    seed(runtime, "u")
    with in_database(runtime, read=False) as route:
        assert route.alias == DatabaseConfiguration(runtime).alias
        assert Item.objects.using(route.alias).count() == 1
        assert Item.objects.count() == 0


def test_a_chosen_alias_is_used(runtime, fresh_alias):
    """alias='tenant_42' registers the configuration under that name."""
    name = fresh_alias("tenant_42")
    with in_database(runtime, alias=name) as route:
        assert route.alias == name
        assert name in connections.databases
    assert name not in connections.databases


def test_a_chosen_alias_never_names_other_settings_once_connected(runtime, tmp_path, fresh_alias):
    """Once a block connected under alias=, other settings are refused that name."""
    name = fresh_alias("tenant_used")
    with in_database(runtime, alias=name):
        Item.objects.count()
    elsewhere = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "e.sqlite3")}
    before = dict(connections.databases)
    with pytest.raises(ConfigurationError, match=f"'{name}' already names another"):
        enter(in_database(elsewhere, alias=name))
    assert connections.databases == before
    with in_database(dict(runtime), alias=name):  # the same settings: fine
        Item.objects.count()


def test_a_chosen_alias_that_never_connected_can_name_corrected_settings(runtime, fresh_alias):
    """A first attempt that failed to connect does not keep the name from the fix."""
    name = fresh_alias("tenant_fixed")
    wrong = {**runtime, "NAME": "/nonexistent-dynroute/x.sqlite3", "HOST": "127.0.0.1", "PORT": "1"}
    with pytest.raises(DatabaseConnectionError):
        enter(in_database(wrong, alias=name))
    with in_database(runtime, alias=name):
        assert Item.objects.count() == 0


def test_a_name_stays_bound_after_a_later_block_under_it_fails_to_connect(
    runtime, tmp_path, fresh_alias, monkeypatch
):
    """A failed entry frees a name only if nothing ever connected under it.

    Threads may still hold connections from the first block: other settings must
    never get the name.
    """
    name = fresh_alias("tenant_flaky")
    with in_database(runtime, alias=name):
        Item.objects.count()

    def refused(self):
        msg = "the server went away"
        raise OperationalError(msg)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", refused)
    with pytest.raises(DatabaseConnectionError):
        enter(in_database(dict(runtime), alias=name))
    monkeypatch.undo()
    elsewhere = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "e.sqlite3")}
    with pytest.raises(ConfigurationError, match="already names another"):
        enter(in_database(elsewhere, alias=name))


def enter(block) -> None:
    """Enter and leave ``block``; its body must not run."""
    with block:
        pytest.fail("the body must not run")


def test_a_chosen_alias_that_is_configured_is_refused_at_entry(runtime):
    """alias='other' collides with settings.DATABASES: refused, nothing registered."""
    before = dict(connections.databases)
    block = in_database(runtime, alias="other")
    with pytest.raises(ConfigurationError, match="'other'"), block:
        pytest.fail("the body must not run")
    assert connections.databases == before


def test_a_chosen_alias_starting_with_underscore_is_refused(runtime):
    """Names starting with '_' are refused when the block is built."""
    with pytest.raises(InvalidTargetError, match="'_storage'"):
        in_database(runtime, alias="_storage")


def test_a_bad_engine_fails_at_entry_leaving_nothing(runtime):
    """An ENGINE that cannot be loaded fails on entry, naming it; nothing is registered."""
    before = dict(connections.databases)
    block = in_database({**runtime, "ENGINE": "django.db.backends.nosuchdb"})
    with pytest.raises(ConfigurationError, match="nosuchdb"), block:
        pytest.fail("the body must not run")
    assert connections.databases == before


def test_concurrent_blocks_on_one_configuration_share_one_alias(runtime):
    """Nested and overlapping blocks share the alias; it goes with the last one."""
    outer = in_database(runtime)
    inner = in_database(dict(runtime), write=True)
    assert outer.route.alias == inner.route.alias
    with outer:
        with inner:
            assert active_aliases() == {outer.route.alias}
        assert outer.route.alias in connections.databases
    assert outer.route.alias not in connections.databases


def test_a_runtime_alias_is_its_own_mirror_to_djangos_test_runner(runtime):
    """Its TEST settings say it mirrors itself: the runner creates no test database for it.

    A test class with ``databases = "__all__"`` set up while the alias is registered
    would otherwise make Django write ``settings.DATABASES[alias]`` (KeyError), and a
    TransactionTestCase would flush a real database.
    """
    with in_database(runtime) as route:
        assert connections.settings[route.alias]["TEST"]["MIRROR"] == route.alias
    with in_database({**runtime, "TEST": {"MIRROR": "other"}}) as route:
        assert connections.settings[route.alias]["TEST"]["MIRROR"] == "other"  # as given


def test_a_nested_block_on_the_same_configuration_leaves_the_outer_connection_alone(runtime):
    """Leaving an inner block on the same settings keeps the outer block's connection.

    Closing it would lose what the outer block does in a transaction there.
    """
    with in_database(runtime, write=True) as route, transaction.atomic(using=route.alias):
        Item.objects.create(name="before the inner block")
        kept = connections[route.alias].connection
        with in_database(dict(runtime)):
            assert Item.objects.count() == 1
        assert connections[route.alias].connection is kept
        Item.objects.create(name="after the inner block")
    assert names(runtime) == ["after the inner block", "before the inner block"]


def test_database_alias_and_configuration_objects_are_entered_like_a_str_and_a_dict(runtime):
    """The typed targets route exactly as the loose forms they stand for."""
    seed(runtime, "r")
    with in_database(DatabaseAlias("other"), write=True) as route:
        assert route.alias == "other"
        assert (router.db_for_read(Item), router.db_for_write(Item)) == ("other", "other")
    configuration = DatabaseConfiguration(runtime)
    with in_database(configuration, write=True) as route:
        assert route.alias == configuration.alias
        assert Item.objects.count() == 1
        Item.objects.create(name="s")
    assert names(runtime) == ["r", "s"]
    assert configuration.alias not in connections.databases


def test_the_connection_is_closed_at_exit_in_the_thread_that_opened_it(runtime):
    """After the block, no session to the runtime database is left open."""
    with in_database(runtime) as route:
        Item.objects.count()
        assert sessions(runtime, expected=1) == 1
    assert sessions(runtime, expected=0) == 0
    assert not hasattr(connections._connections, route.alias)


def test_async_blocks_close_the_connection_the_async_orm_opened(runtime):
    """Async blocks: the async ORM's connection is closed in its thread at exit."""
    seed(runtime, "a")

    async def main() -> tuple[int, int]:
        async with in_database(runtime):
            count = await Item.objects.acount()
            return count, sessions(runtime, expected=1)

    count, during = asyncio.run(main())
    assert count == 1
    assert during == 1
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()


def test_async_blocks_inside_async_to_sync(runtime):
    """Under async_to_sync the async ORM runs in the caller's thread; it is closed too."""
    seed(runtime, "a", "b")

    async def main() -> int:
        async with in_database(runtime):
            return await Item.objects.acount()

    assert async_to_sync(main)() == 2
    assert sessions(runtime, expected=0) == 0


def test_an_async_block_hops_threads_on_entry_only(runtime, hops, caplog):
    """Its exit closes the async ORM's connection from the event loop: one hop, not two.

    A hop costs ~100 µs of CPU and a wake-up of the ORM's thread, per request under
    ``DatabaseMiddleware``. Pooled connections are the exception (one hop each way).
    """

    async def main() -> int:
        async with in_database(runtime):
            await Item.objects.acount()
            return sessions(runtime, expected=1)

    assert asyncio.run(main()) == 1
    assert hops == ["_enter_here"]
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()
    assert caplog.records == []  # closed as its own, not as another thread's stray


def test_tasks_sharing_the_orm_thread_keep_a_configuration_until_the_last_leaves(runtime, caplog):
    """Two tasks' blocks on one configuration: the first exit leaves the other's connection."""
    seed(runtime, "a")
    first_left = asyncio.Event()
    second_in = asyncio.Event()

    async def first() -> None:
        async with in_database(runtime):
            await Item.objects.acount()
            await second_in.wait()
        first_left.set()

    def raw_connection(alias: str) -> object:
        return connections[alias].connection

    async def second() -> tuple[int, int]:
        async with in_database(runtime) as route:
            await Item.objects.acount()
            before = await sync_to_async(raw_connection)(route.alias)
            second_in.set()
            await first_left.wait()
            # The async ORM's thread is shared: the first exit must not close it here.
            counted = await Item.objects.acount()
            assert await sync_to_async(raw_connection)(route.alias) is before
            return counted, sessions(runtime, expected=1)

    async def main() -> tuple[int, int]:
        _, counted = await asyncio.gather(first(), second())
        return counted

    assert asyncio.run(main()) == (1, 1)
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()
    assert caplog.records == []


def test_a_long_lived_orm_thread_forgets_the_aliases_of_its_closed_blocks(runtime, fresh_alias):
    """A closed block's connection object leaves the ORM's thread on its next entry.

    Outside a request (``asyncio.run``), the async ORM runs in one thread for the life
    of the process: it must not keep a connection object per configuration ever used.
    """
    first, second = fresh_alias("orm_first"), fresh_alias("orm_second")

    def held() -> set[str]:
        return {name for name in (first, second) if hasattr(connections._connections, name)}

    async def main() -> list[set[str]]:
        seen = []
        async with in_database(runtime, alias=first):
            await Item.objects.acount()
            seen.append(await sync_to_async(held)())
        async with in_database(runtime, alias=second):
            await Item.objects.acount()
            seen.append(await sync_to_async(held)())
        return seen

    assert asyncio.run(main()) == [{first}, {second}]
    assert sessions(runtime, expected=0) == 0

    def drop(name: str) -> None:
        del connections[name]  # code of the project's, there before dynroute drops it

    async def again() -> None:
        await sync_to_async(drop)(second)
        async with in_database(runtime, alias=first):
            await Item.objects.acount()

    asyncio.run(again())
    assert sessions(runtime, expected=0) == 0


@pytest.mark.skipif(
    BACKEND != "postgresql" or django.VERSION < (5, 1),
    reason="connection pools need PostgreSQL and Django 5.1+",
)
def test_a_pooled_block_inside_an_async_block_hops_on_its_own_exit_only(runtime, fresh_alias, hops):
    """The pooled block's exit returns its connection to the pool in the ORM's thread.

    It takes its record with it: the enclosing block's exit still needs no hop.
    """
    pooled = {**runtime, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2, "timeout": 10}}}

    async def main() -> None:
        async with in_database(runtime, alias=fresh_alias("around_pool")), in_database(pooled):
            await Item.objects.acount()

    asyncio.run(main())
    assert hops == ["_enter_here", "_enter_here", "leave"]
    assert sessions(runtime, expected=0) == 0


def test_nested_async_blocks_hop_on_their_entries_only(runtime, fresh_alias, hops):
    """Each exit takes its own entry off this task's record: neither needs a hop."""

    async def main() -> None:
        async with in_database(runtime):
            async with in_database(runtime, alias=fresh_alias("inner")):
                await Item.objects.acount()
            await Item.objects.acount()
        async with in_database(runtime):
            await Item.objects.acount()

    asyncio.run(main())
    assert hops == ["_enter_here"] * 3
    assert sessions(runtime, expected=0) == 0


def test_an_async_exit_whose_close_fails_names_the_alias(runtime, caplog):
    """The event loop's close of the ORM thread's connection fails: a warning, nothing more."""
    raws = []

    def break_close(alias: str) -> None:
        wrapper = connections[alias]
        raws.append(wrapper.connection)
        wrapper.connection = FailingClose(wrapper.connection)

    async def main() -> str:
        async with in_database(runtime) as route:
            await Item.objects.acount()
            await sync_to_async(break_close)(route.alias)
        return route.alias

    try:
        alias = asyncio.run(main())
        assert [record.getMessage() for record in caplog.records] == [
            f"closing runtime database {alias!r} failed: OSError"
        ]
        assert not active_aliases()
    finally:
        raws[0].close()
    assert sessions(runtime, expected=0) == 0


def test_an_async_block_whose_connection_was_closed_inside_leaves_quietly(runtime, caplog):
    """A connection the code in the block closed itself is not closed again."""

    def close(alias: str) -> None:
        connections[alias].close()

    async def main() -> None:
        async with in_database(runtime) as route:
            await Item.objects.acount()
            await sync_to_async(close)(route.alias)

    asyncio.run(main())
    assert caplog.records == []
    assert sessions(runtime, expected=0) == 0


def test_request_threads_leave_no_record_behind(runtime):
    """Under ASGI each request's sync code has a thread of its own, which ends with it.

    What an exit leaves for such a thread to drop is forgotten once the thread has
    ended; a thread still alive keeps its record (it drops the objects itself).
    """
    from dynroute.runtime import _connections  # noqa: PLC0415 - its record of them

    async def request() -> None:
        async with ThreadSensitiveContext(), in_database(runtime):
            await Item.objects.acount()

    async def main() -> None:
        async with in_database(runtime):  # the long-lived ORM thread's block
            await Item.objects.acount()
        for _ in range(20):
            await request()

    asyncio.run(main())
    assert len(_connections._detached) <= 2  # the last request's, and the shared thread's
    assert any(thread.is_alive() for thread in _connections._detached)  # the shared one
    assert sessions(runtime, expected=0) == 0


def test_a_block_left_in_another_thread_by_hand_leaks_nothing(runtime):
    """A ``with`` block entered in one thread and left in another (by hand, in its context).

    The leaving thread never connected: nothing of its own to close, and its own later
    blocks close their connection at their exit. The entering thread's connection is
    closed when the alias goes.
    """
    block = in_database(runtime)
    context = contextvars.copy_context()
    errors: list[BaseException] = []

    def in_another_thread() -> None:
        try:
            context.run(block.__exit__, None, None, None)
            with in_database(runtime):
                Item.objects.count()
            assert sessions(runtime, expected=1) == 1  # the entering thread's, not its own
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    with in_database(runtime) as route:  # keeps the alias registered meanwhile
        Item.objects.count()
        context.run(block.__enter__)
        thread = threading.Thread(target=in_another_thread)
        thread.start()
        thread.join()
        assert errors == []
    assert route.alias not in connections.databases
    assert sessions(runtime, expected=0) == 0


def test_an_async_block_dropped_by_an_enclosing_exit_closes_its_own_connection(
    runtime, fresh_alias, hops, caplog
):
    """An ``async with`` entry never left (an abandoned async generator) is undone as its own.

    Its connection, opened in the async ORM's thread, is closed as that thread's, not
    as a stray one left by work started inside a block; the enclosing block's exit
    still needs no thread hop.
    """

    async def main() -> None:
        async with (
            in_database(runtime, alias=fresh_alias("outer")),
            in_database(runtime, alias=fresh_alias("middle")),
        ):
            # Entered in a thread of its own (a ThreadSensitiveContext's, ended since).
            async with ThreadSensitiveContext():
                await in_database(runtime).__aenter__()  # never left
                await Item.objects.acount()
            assert sessions(runtime, expected=3) == 3

    asyncio.run(main())
    assert hops == ["_enter_here"] * 3
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "dropped with it" in messages[0]


def test_a_block_dropped_by_an_enclosing_exit_closes_its_connection(runtime, caplog):
    """The same with ``with``: the dropped block's connection is this thread's, closed."""

    def body() -> None:
        with in_database("other"):
            inner = in_database(runtime)
            inner.__enter__()  # never left
            Item.objects.count()
            assert sessions(runtime, expected=1) == 1

    # A context of its own: nothing an earlier test's async_to_sync left in this one.
    contextvars.Context().run(body)
    assert sessions(runtime, expected=0) == 0
    assert not active_aliases()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "dropped with it" in messages[0]


def test_work_started_inside_a_block_is_closed_when_the_alias_goes(runtime, caplog):
    """A thread that inherited the route and connected is closed at the last exit."""
    seed(runtime, "a")
    counted = []
    done = threading.Event()
    finish = threading.Event()

    def work() -> None:
        counted.append(Item.objects.count())
        done.set()
        finish.wait(timeout=30)  # still running when the block exits

    with in_database(runtime) as route:
        thread = threading.Thread(target=contextvars.copy_context().run, args=(work,))
        thread.start()
        try:
            assert done.wait(timeout=30)
            assert sessions(runtime, expected=2) == 2  # this block's and the thread's
        except BaseException:
            finish.set()
            raise
    finish.set()
    thread.join()
    assert counted == [1]
    assert sessions(runtime, expected=0) == 0
    expected = (
        f"closing a connection to runtime database {route.alias!r} left open by another "
        "thread: work started inside a block should finish inside it"
    )
    assert [record.getMessage() for record in caplog.records] == [expected]


def test_a_block_left_in_another_thread_than_it_entered_leaks_nothing(runtime):
    """An ``async with`` entered under one thread's async_to_sync and left under another's.

    The leaving thread never connected: nothing of its own to close, and its later
    blocks still close their connection at their exit. The entering thread's
    connection is closed when the alias goes.
    """
    block = in_database(runtime)
    context = contextvars.copy_context()
    errors: list[BaseException] = []

    def in_another_thread() -> None:
        try:
            context.run(async_to_sync(block.__aexit__), None, None, None)
            with in_database(runtime):
                Item.objects.count()
            assert sessions(runtime, expected=1) == 1  # the entering thread's, not its own
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    with in_database(runtime) as route:  # keeps the alias registered meanwhile
        Item.objects.count()
        context.run(async_to_sync(block.__aenter__))
        assert sessions(runtime, expected=1) == 1  # one connection for this thread
        thread = threading.Thread(target=in_another_thread)
        thread.start()
        thread.join()
        assert errors == []
    assert route.alias not in connections.databases
    assert sessions(runtime, expected=0) == 0


def test_no_session_is_left_after_many_sequential_blocks(runtime):
    """50 blocks in a row leave the server exactly as they found it."""
    for _ in range(50):
        with in_database(runtime):
            Item.objects.exists()
    assert sessions(runtime, expected=0) == 0
