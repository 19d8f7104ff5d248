"""PrimaryReplica and use_primary(), on every backend (replica health: test_replica_health.py).

The "replicas" here (tests/settings.py) are databases of their own with the same
tables that never receive the primary's rows: a replica whose replay is stopped. A
read that went to a replica does not see a row written to the primary, so where a
query went shows in its result, not only in the router's answer. Most tests commit
(``transaction=True``): inside a transaction on the primary, reads go to the primary,
which is the point of one of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.core import checks
from django.db import DatabaseError, connections, router, transaction
from django.test import override_settings

import dynroute
from dynroute import PrimaryReplica, in_database, signals, tenants, use_primary
from dynroute.checks import check_replica_mirrors
from dynroute.exceptions import (
    RouteLockedError,
    RouteStateError,
    UnknownDatabaseError,
    UsageError,
    WriteForbiddenError,
)
from dynroute.replicas import (
    Entry,
    _entry,
    _health,
    _policy,
    _positions,
    _tracking,
    describe_pins,
    get_pins,
    has_written,
    read_primaries,
    used_primary,
)
from tests.testapp.models import Author, Book, Item

if TYPE_CHECKING:
    from collections.abc import Callable

REPLICAS = ("replica1", "replica2")
DATABASES = ["default", "other", "replica1", "replica2"]

pytestmark = pytest.mark.django_db(databases=DATABASES, transaction=True)


def replicas(**options: Any) -> PrimaryReplica:
    """A PrimaryReplica on default and the two test replicas."""
    return PrimaryReplica("default", REPLICAS, **options)


def read_alias() -> str:
    """Where a read of Item goes here, now."""
    return Item.objects.all().db


def visible(name: str) -> bool:
    """Whether a read here finds the Item called ``name``."""
    return Item.objects.filter(name=name).exists()


# Routing


def test_reads_go_to_one_replica_per_block_and_writes_to_the_primary() -> None:
    """A block reads from the replica chosen on entry, for every read; writes hit the primary."""
    Item.objects.create(name="on-primary")
    block = in_database(policy=replicas(pin_after_write=False))
    with block:
        chosen = read_alias()
        assert chosen in REPLICAS
        assert [read_alias() for _ in range(5)] == [chosen] * 5
        assert not visible("on-primary")  # the replica does not have it
        Item.objects.create(name="written")
        assert read_alias() == chosen  # pinning off
    assert Item.objects.using("default").filter(name="written").exists()
    assert not Item.objects.using(chosen).filter(name="written").exists()


@pytest.fixture
def _groups_of_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The primary/replica groups this test makes are forgotten after it.

    Every PrimaryReplica made joins its aliases for relations, for the process: a
    group of "other" with the test replicas (which mirror "default") would let later
    tests relate objects across them.
    """
    monkeypatch.setattr(_policy, "_GROUPS", dict(_policy._GROUPS))
    monkeypatch.setattr(_policy, "_PAIRS", set(_policy._PAIRS))


@pytest.mark.usefixtures("_groups_of_this_test")
def test_writes_go_to_the_policys_primary_whichever_database_it_is() -> None:
    """A PrimaryReplica on "other": its writes, and the router's answer for them, go there."""
    with in_database(policy=PrimaryReplica("other", REPLICAS)):
        assert router.db_for_write(Item) == "other"
        Item.objects.create(name="on-other")
    assert Item.objects.using("other").filter(name="on-other").exists()
    assert not Item.objects.using("default").filter(name="on-other").exists()


@pytest.mark.usefixtures("_groups_of_this_test")
def test_a_block_locked_to_the_primary_admits_its_primary_replica_policy() -> None:
    """Under a route lock to "other" (a tenant's request), a policy on "other" enters."""
    tenants.lock("other")
    try:
        with in_database(policy=PrimaryReplica("other", REPLICAS)):
            Item.objects.create(name="tenant-row")
        with pytest.raises(RouteLockedError), in_database(policy=replicas()):
            pass  # pragma: no cover - refused: its primary is "default"
    finally:
        tenants.release()
    assert Item.objects.using("other").filter(name="tenant-row").exists()


def test_a_block_with_prevent_writes_refuses_writes_to_its_primary() -> None:
    """prevent_writes=True on a PrimaryReplica block: its reads run, its writes are refused."""
    with in_database(policy=replicas(), prevent_writes=True):
        assert read_alias() in REPLICAS
        with pytest.raises(WriteForbiddenError):
            Item.objects.create(name="refused")
    assert not Item.objects.using("default").filter(name="refused").exists()


def test_round_robin_alternates_the_replicas_between_entries() -> None:
    """Successive entries of one block take the replicas in turn."""
    block = in_database(policy=replicas())
    seen = []
    for _ in range(6):
        with block:
            seen.append(read_alias())
    assert seen[0::2] == [seen[0]] * 3
    assert seen[1::2] == [seen[1]] * 3
    assert {seen[0], seen[1]} == set(REPLICAS)


def test_random_choice_stays_among_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """choose="random" picks each entry's replica with random.choice over the replicas."""
    picks = iter(["replica2", "replica1", "replica2"])
    monkeypatch.setattr(_policy.random, "choice", lambda _seq: next(picks))
    block = in_database(policy=replicas(choose="random"))
    seen = []
    for _ in range(3):
        with block:
            seen.append(read_alias())
    assert seen == ["replica2", "replica1", "replica2"]


def test_a_choose_function_gets_the_replicas_that_are_up_and_picks_one(
    clock: list[float], broken: Any
) -> None:
    """A choose function is given the replicas that are up, and its pick is used."""
    given: list[tuple[str, ...]] = []

    def last(up: tuple[str, ...]) -> str:
        given.append(up)
        return up[-1]

    block = in_database(policy=replicas(choose=last))
    with block:
        assert read_alias() == "replica2"
    break_, _, _ = broken
    break_("replica2")
    with block:
        assert read_alias() == "replica1"  # replica2 failed on connect: marked down
    with block:
        assert read_alias() == "replica1"  # chosen among the replicas that are up
    assert given == [REPLICAS, REPLICAS, ("replica1",)]


def test_a_choose_function_returning_something_else_is_refused() -> None:
    """A pick that is not one of the replicas given is an error naming it, on entry."""
    block = in_database(policy=replicas(choose=lambda _up: "default"))
    with pytest.raises(UsageError, match=r"returned 'default', which is not one of the replicas"):
        block.__enter__()
    assert dynroute.current_route() is None


# Pinning


def test_reads_go_to_the_primary_after_a_write_until_the_block_exits() -> None:
    """Read your writes: after a write the block reads the primary; the next block does not."""
    block = in_database(policy=replicas())
    with block:
        before = read_alias()
        assert before in REPLICAS
        Item.objects.create(name="mine")
        assert read_alias() == "default"
        assert visible("mine")  # read your writes
    with block:
        assert read_alias() in REPLICAS  # a new block starts unpinned
        assert not visible("mine")


def test_without_pinning_a_read_after_a_write_is_stale() -> None:
    """What pinning prevents: the same steps with pin_after_write=False miss the row."""
    with in_database(policy=replicas(pin_after_write=False)):
        Item.objects.create(name="mine")
        assert not visible("mine")


def test_a_write_in_an_inner_block_pins_the_outer_block_until_it_exits() -> None:
    """A write inside a nested block still pins the enclosing block after the inner one exits."""
    policy = replicas()
    with in_database(policy=policy):
        with in_database(policy=policy):
            Item.objects.create(name="inner")
        assert read_alias() == "default"
        assert visible("inner")
    with in_database(policy=policy):
        assert read_alias() in REPLICAS


def test_a_block_entered_after_a_write_reads_the_primary_too() -> None:
    """A block entered inside a pinned block reads the primary, or it would miss the write."""
    policy = replicas()
    with in_database(policy=policy):
        Item.objects.create(name="outer")
        with in_database(policy=policy):
            assert visible("outer")


def test_a_plain_block_inside_routes_as_it_says_and_the_pin_survives_it() -> None:
    """An ordinary block inside a pinned one routes as it says; the pin is back after it."""
    with in_database(policy=replicas()):
        Item.objects.create(name="pinned")
        with in_database("other"):
            assert read_alias() == "other"
        assert read_alias() == "default"


def test_a_write_in_a_child_task_pins_that_task_not_its_siblings() -> None:
    """A task's write pins that task, not its siblings; sync_to_async pins its caller."""
    policy = replicas()

    async def writer(seen: dict[str, str]) -> None:
        await Item.objects.acreate(name="by-writer")
        seen["writer"] = await sync_to_async(read_alias)()
        seen["writer sees"] = str(await Item.objects.filter(name="by-writer").aexists())

    async def reader(seen: dict[str, str], written: asyncio.Event) -> None:
        await written.wait()
        seen["sibling"] = await sync_to_async(read_alias)()

    async def main() -> dict[str, str]:
        seen: dict[str, str] = {}
        async with in_database(policy=policy):
            written = asyncio.Event()

            async def write_then_signal() -> None:
                await writer(seen)
                written.set()

            await asyncio.gather(write_then_signal(), reader(seen, written))
            seen["parent"] = await sync_to_async(read_alias)()
            await Item.objects.acreate(name="by-parent")  # sync_to_async hands the pin back
            seen["parent after its write"] = await sync_to_async(read_alias)()
        return seen

    seen = asyncio.run(main())
    assert seen["writer"] == "default"
    assert seen["writer sees"] == "True"
    assert seen["sibling"] in REPLICAS
    assert seen["parent"] in REPLICAS
    assert seen["parent after its write"] == "default"


def test_threads_each_in_their_own_block_pin_only_themselves() -> None:
    """Threads in blocks on one policy: a thread's write pins that thread only."""
    policy = replicas()
    barrier = threading.Barrier(4)
    results: dict[int, tuple[str, str, bool]] = {}

    def work(number: int) -> None:
        try:
            with in_database(policy=policy):
                barrier.wait(timeout=30)
                before = read_alias()
                if number % 2:
                    Item.objects.create(name=f"thread-{number}")
                barrier.wait(timeout=30)
                results[number] = (before, read_alias(), visible(f"thread-{number}"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, (before, after, sees_own) in results.items():
        assert before in REPLICAS
        if number % 2:
            assert (after, sees_own) == ("default", True)
        else:
            assert after in REPLICAS  # a writing thread did not pin this one
    assert len(results) == 4


# Transactions


@pytest.mark.parametrize(
    "atomic", [transaction.atomic, dynroute.atomic], ids=["django", "dynroute"]
)
def test_reads_go_to_the_primary_inside_a_transaction_on_it(atomic: Any) -> None:
    """Inside a transaction on the primary (Django's or dynroute's), reads go to the primary."""
    with in_database(policy=replicas()):
        assert read_alias() in REPLICAS
        with atomic():
            assert read_alias() == "default"
            assert Item.objects.all().db == "default"
        assert read_alias() in REPLICAS  # the transaction wrote nothing: no pin


def test_a_transaction_sees_its_own_uncommitted_rows() -> None:
    """Even without pinning, a transaction's reads see its own uncommitted rows."""
    with in_database(policy=replicas(pin_after_write=False)), dynroute.atomic():
        Item.objects.create(name="uncommitted")
        assert visible("uncommitted")


@pytest.mark.django_db(databases=DATABASES, transaction=False)
def test_inside_a_test_case_transaction_every_read_goes_to_the_primary() -> None:
    """Django's TestCase wraps each test in a transaction on the primary: reads follow it."""
    with in_database(policy=replicas()):
        assert read_alias() == "default"


# use_primary


def test_use_primary_sends_reads_to_the_primary_and_nesting_restores() -> None:
    """use_primary() reads the primary; leaving a nested scope keeps the enclosing one."""
    with in_database(policy=replicas()):
        with use_primary():
            assert read_alias() == "default"
            with use_primary():
                assert read_alias() == "default"
            assert read_alias() == "default"  # the outer scope is still active
        assert read_alias() in REPLICAS


def test_use_primary_entered_before_a_block_reads_the_primary_inside_it() -> None:
    """A block entered inside use_primary() reads the primary; after the scope, its replica."""
    block = in_database(policy=replicas())
    with use_primary():
        with block:
            assert read_alias() == "default"
        with block:
            assert read_alias() == "default"  # every block entered while it is active
    with block:
        assert read_alias() in REPLICAS


def test_leaving_use_primary_keeps_the_pin_of_a_write_made_inside_it() -> None:
    """The scope's end does not undo read-your-writes; without pinning it leaves no trace."""
    with in_database(policy=replicas()):
        with use_primary():
            Item.objects.create(name="inside")
        assert read_alias() == "default"
    with in_database(policy=replicas(pin_after_write=False)):
        with use_primary():
            assert read_alias() == "default"
            Item.objects.create(name="unpinned")
        assert read_alias() in REPLICAS


def test_use_primary_decorates_sync_and_async_functions_with_and_without_parentheses() -> None:
    """@use_primary and @use_primary() work on sync and async functions."""

    @use_primary
    def bare() -> str:
        return read_alias()

    @use_primary()
    def called() -> str:
        return read_alias()

    @use_primary
    async def coroutine() -> str:
        return await sync_to_async(read_alias)()

    async def in_block() -> str:
        async with in_database(policy=replicas()):
            return await coroutine()

    with in_database(policy=replicas()):
        assert bare() == called() == "default"
        assert read_alias() in REPLICAS
    assert asyncio.run(in_block()) == "default"


def test_use_primary_is_an_async_context_manager() -> None:
    """Async with use_primary() reads the primary, in the async ORM's thread too."""

    async def main() -> tuple[str, str]:
        async with in_database(policy=replicas()):
            async with use_primary():
                inside = await sync_to_async(read_alias)()
            return inside, await sync_to_async(read_alias)()

    inside, after = asyncio.run(main())
    assert inside == "default"
    assert after in REPLICAS


def test_use_primary_left_without_entry_raises() -> None:
    """Leaving use_primary() where it is not active is a RouteStateError that says what to do."""
    with pytest.raises(RouteStateError) as raised:
        use_primary().__exit__(None, None, None)
    assert str(raised.value) == (
        "use_primary() was left without being active here: a scope must be left in the "
        "thread or task that entered it, once per entry."
    )


def test_use_primary_shows_the_call_that_made_it() -> None:
    """repr(use_primary()) is the call, as a debugger or a log shows it."""
    assert repr(use_primary()) == "use_primary()"


def test_read_primaries_sends_the_outermost_blocks_reads_to_the_primary_until_it_exits() -> None:
    """What the middleware calls for a request that reads the primary: outermost block only.

    Inside a nested block it does nothing and says so (the middleware enters
    use_primary() instead): a pin set there would outlive the inner block.
    """
    policy = replicas()
    assert read_primaries() is False  # outside every block: nothing to send
    with in_database(policy=policy):
        with in_database(policy=policy):
            assert read_primaries() is False
            assert read_alias() in REPLICAS
        assert read_primaries() is True
        assert read_alias() == "default"
        assert not used_primary()  # no use_primary() scope was entered
    with in_database(policy=policy):
        assert read_alias() in REPLICAS  # it ended with the block


def test_use_primary_has_no_effect_outside_replica_blocks() -> None:
    """use_primary() changes nothing for a block that is not a PrimaryReplica one."""
    with use_primary(), in_database("other"):
        assert read_alias() == "other"


def test_has_written_says_whether_a_block_here_wrote_to_its_primary() -> None:
    """Whether a primary here was written to: use_primary() alone is no write."""
    with in_database(policy=replicas()):
        assert not has_written()
        with use_primary():
            assert not has_written()  # reads sent to the primary, nothing written
        Item.objects.create(name="written")
        assert has_written()
        assert get_pins() == frozenset({"default"})
    assert not has_written()


def test_pins_are_described_for_the_panel() -> None:
    """What a read's pins are, in words: the primaries written to, or use_primary()."""
    assert describe_pins(None) is None  # outside every PrimaryReplica block
    assert describe_pins(frozenset()) is None  # inside one, nothing written
    assert describe_pins(frozenset({"default", "other"})) == "default, other"
    assert describe_pins(frozenset({"", "other"})) == "every primary (use_primary()), other"


# Explaining a read: Entry.read_reason() names the rule of Entry.read() that decided it.


def explained(**options: Any) -> tuple[str, str]:
    """Where a read of the innermost PrimaryReplica block goes here, and the reason given."""
    entry = dynroute.replicas.current_entry()
    assert entry is not None
    alias = entry.read(Item)
    assert alias == read_alias()  # the router asks the same rule
    return alias, entry.read_reason(alias)


def test_a_read_on_the_replica_chosen_on_entry_says_so() -> None:
    """No pin, no transaction, the replica up: the replica chosen, and the reason says so."""
    with in_database(policy=replicas(choose=lambda up: up[1])):
        assert explained() == ("replica2", "the replica chosen on entry")


def test_a_read_inside_use_primary_says_so() -> None:
    """Inside use_primary(): the primary, for that reason (even before any write)."""
    with in_database(policy=replicas()), use_primary():
        assert explained() == ("default", "the primary, inside use_primary()")


def test_a_read_after_a_write_says_it_is_pinned() -> None:
    """After a write with pin_after_write: the primary, pinned."""
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
        assert explained() == ("default", "the primary, pinned after a write")


def test_a_write_does_not_pin_a_block_that_does_not_pin_after_writes() -> None:
    """pin_after_write=False, after a write by a block that pins: the transaction decides.

    Pins are per thread and task: an inner block that does not pin reads its replica
    after the outer block's write, and inside a transaction reads the primary for that
    reason, never "pinned after a write" (which the panel once said, restating the rule).
    """
    with in_database(policy=replicas()):
        Item.objects.create(name="written")
        with in_database(policy=replicas(pin_after_write=False, choose=lambda up: up[0])):
            assert explained() == ("replica1", "the replica chosen on entry")
            with transaction.atomic():
                assert explained() == ("default", "the primary, inside a transaction")


def test_a_read_inside_a_transaction_on_the_primary_says_so() -> None:
    """In a transaction on the primary: the primary, for that reason."""
    with in_database(policy=replicas(pin_after_write=False)), transaction.atomic():
        assert explained() == ("default", "the primary, inside a transaction")


def test_a_read_with_every_replica_down_says_so(clock: list[float], broken: Any) -> None:
    """Every replica down when the block was entered: the primary, and why."""
    break_, _, _ = broken
    break_("replica1")
    break_("replica2")
    block = in_database(policy=replicas())
    with block:
        read_alias()  # marks both down
    with block:
        assert explained() == ("default", "the primary, every replica is down")


def test_a_read_on_another_replica_says_the_chosen_one_is_down(
    clock: list[float], broken: Any
) -> None:
    """The replica chosen fails to connect: another one answers, and the reason says why."""
    break_, _, _ = broken
    break_("replica1")
    with in_database(policy=replicas(choose=lambda up: up[0])):
        assert explained() == ("replica2", "another replica (the one chosen is down)")


def test_a_read_on_the_primary_for_no_listed_reason_says_the_primary() -> None:
    """The primary named for a read no rule sent there (the panel's fallback wording)."""
    with in_database(policy=replicas(choose=lambda up: up[0])):
        entry = dynroute.replicas.current_entry()
        assert entry is not None
        assert entry.read_reason("default") == "the primary"


# Relations


def test_objects_of_the_primary_and_its_replicas_may_be_related() -> None:
    """An object read from a replica may be assigned to a relation of the primary's objects."""
    policy = replicas()
    Author.objects.using("replica1").create(name="a")
    author = Author.objects.using("replica1").get()
    book = Book(title="t")
    book._state.db = "default"  # as if read from the primary: the router is asked
    book.author = author  # no "router prevents this relation"
    assert policy.allow_relation(author, Author.objects.create(name="b")) is True


def test_a_primary_shared_by_two_policies_may_be_related_to_the_replicas_of_both(
    fresh_alias: Callable[[str], str],
) -> None:
    """Each policy adds its replicas to the primary's group: the second replaces nothing."""
    # Aliases of their own: the groups and the W010 check's pairs last for the process.
    primary, first, second = fresh_alias("primary"), fresh_alias("replica"), fresh_alias("replica")
    PrimaryReplica(primary, (first,))
    PrimaryReplica(primary, (second,))
    for replica in (first, second):
        author = Author(name="a")
        author._state.db = primary
        book = Book(title="t")
        book._state.db = replica
        book.author = author  # no "router prevents this relation"
        assert router.allow_relation(author, book) is True


def test_objects_of_other_databases_may_not_be_related_to_them() -> None:
    """Only the group is allowed: Django's same-database rule holds for other databases."""
    policy = replicas()
    author = Author.objects.using("other").create(name="elsewhere")
    book = Book.objects.using("replica1").model(title="t")
    book._state.db = "replica1"
    with pytest.raises(ValueError, match="router prevents this relation"):
        book.author = author
    # The policy asked directly (as a Django router) has no opinion either.
    assert policy.allow_relation(author, book) is None
    assert policy.allow_relation(book, author) is None


# Checks and errors


def test_the_check_warns_about_a_replica_that_does_not_mirror_its_primary() -> None:
    """dynroute.W010 names a replica without TEST MIRROR of its primary, with the fix."""
    replicas()
    settings = connections.settings
    saved = {alias: settings[alias].get("TEST") for alias in REPLICAS}
    try:
        settings["replica1"]["TEST"] = {"MIRROR": "default"}
        settings["replica2"]["TEST"] = {"NAME": "x"}
        warnings = check_replica_mirrors()
    finally:
        for alias, test in saved.items():
            settings[alias]["TEST"] = test
    # Other tests made PrimaryReplicas on other primaries, and on default with other
    # replicas (run before this one in mutmut's order): only these two are asked here.
    ours = [w for w in warnings if "of 'default'" in w.msg and w.obj in REPLICAS]
    [warning] = ours
    assert [w.obj for w in ours] == ["replica2"]
    assert warning.id == "dynroute.W010"
    assert warning.level == checks.WARNING
    assert """"TEST": {"MIRROR": 'default'}""" in warning.hint


def test_the_check_warns_once_about_a_replica_that_several_groups_list() -> None:
    """Two groups of one primary listing the same replica: one dynroute.W010 for it."""
    PrimaryReplica("default", ("replica2", "replica1"))
    PrimaryReplica("default", ("replica2",))
    settings = connections.settings
    saved = settings["replica2"].get("TEST")
    try:
        settings["replica2"]["TEST"] = {"NAME": "x"}
        warnings = check_replica_mirrors()
    finally:
        settings["replica2"]["TEST"] = saved
    about = [w for w in warnings if w.obj == "replica2" and "of 'default'" in w.msg]
    assert len(about) == 1


def test_the_check_reads_the_middleware_setting() -> None:
    """dynroute.W010 checks the replicas of DYNROUTE_PRIMARY_REPLICA too."""
    settings = connections.settings
    saved = settings["other"].get("TEST")
    try:
        with override_settings(
            DYNROUTE_PRIMARY_REPLICA={"primary": "replica1", "replicas": ["other"]}
        ):
            warnings = check_replica_mirrors()
    finally:
        settings["other"]["TEST"] = saved
    assert any("The replica 'other' of 'replica1'" in w.msg for w in warnings)


def test_an_unknown_alias_is_refused_on_entry_naming_it() -> None:
    """An alias missing from DATABASES is named when the block is entered; nothing stays routed."""
    block = in_database(policy=PrimaryReplica("default", ("replica1", "nowhere", "gone")))
    with pytest.raises(UnknownDatabaseError) as raised:
        block.__enter__()
    configured = ", ".join(repr(alias) for alias in django_settings.DATABASES)
    assert str(raised.value) == (
        "PrimaryReplica: the database alias(es) 'nowhere', 'gone' are not in "
        f"settings.DATABASES (configured: {configured}). Add each replica to DATABASES, "
        """with "TEST": {"MIRROR": 'default'}."""
    )
    assert dynroute.current_route() is None
    with pytest.raises(UnknownDatabaseError, match=r"'gone' are not in settings.DATABASES"):
        block.__enter__()  # refused again: a failed check is not remembered


def test_aliases_found_once_are_not_looked_up_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django never removes a database at run time: entries after the first skip the check."""
    policy = replicas()
    with in_database(policy=policy):
        pass
    with monkeypatch.context() as patch:
        patch.setattr(connections, "settings", {"default": {}})  # an instance cache
        with in_database(policy=policy):
            assert dynroute.current_route() is not None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"replicas": "replica1"}, r"not the string 'replica1': write replicas=\('replica1',\)"),
        ({"replicas": ()}, r"must list at least one database alias"),
        ({"replicas": 5}, r"takes a sequence of aliases, got 5"),
        ({"replicas": ("default",)}, r"lists an alias twice, or the primary 'default'"),
        ({"replicas": ("r", "r")}, r"lists an alias twice"),
        ({"primary": "", "replicas": ("r",)}, r"primary=...\) must be a database alias"),
        ({"replicas": ("r",), "choose": "fastest"}, r"got 'fastest'"),
        ({"replicas": ("r",), "pin_after_write": 1}, r"must be True or False, got 1"),
        ({"replicas": ("r",), "down_seconds": -1}, r"seconds >= 0, got -1"),
        ({"replicas": ("r",), "down_seconds": "30"}, r"seconds >= 0, got '30'"),
        ({"replicas": ("r",), "pin": "lsn"}, r"'position' or 'time', got 'lsn'"),
        ({"replicas": ("r",), "max_lag": 0}, r"max_lag=...\) must be seconds > 0 or None, got 0"),
        ({"replicas": ("r",), "max_lag": True}, r"got True"),
        ({"replicas": ("r",), "lag_check_seconds": "5"}, r"lag_check_seconds.*> 0, got '5'"),
    ],
)
def test_bad_arguments_are_refused_naming_the_value(
    arguments: dict[str, Any], message: str
) -> None:
    """Each wrong argument is refused with the value and what is expected."""
    with pytest.raises(UsageError, match=message):
        PrimaryReplica(**arguments)


def test_repr_shows_the_aliases_and_options() -> None:
    """The repr shows aliases and options, and a choose function by name."""
    assert repr(replicas()) == (
        "PrimaryReplica('default', ('replica1', 'replica2'), choose='round_robin', "
        "pin_after_write=True, pin='position', down_seconds=30)"
    )
    assert repr(PrimaryReplica("default", ("r",), pin="time", max_lag=2.5)).endswith(
        "pin='time', down_seconds=30, max_lag=2.5, lag_check_seconds=5)"
    )
    assert "choose='Random.choice'" in repr(PrimaryReplica("default", ("r",), choose=random.choice))

    class Last:
        def __call__(self, up: tuple[str, ...]) -> str:
            return up[-1]

    # An object with no __qualname__ of its own: by its type's name.
    assert "choose='Last'" in repr(PrimaryReplica("default", ("r",), choose=Last()))


def test_an_entry_shows_its_policy_and_the_replica_it_reads() -> None:
    """The entry of a block (as a debugger shows it) names its policy and the replica chosen."""
    policy = replicas(choose=lambda up: up[1])
    with in_database(policy=policy):
        assert repr(dynroute.replicas.current_entry()) == f"<{policy!r} entry reading 'replica2'>"
    # Every replica down on entry: the entry reads the primary.
    assert repr(Entry(policy, None)) == f"<{policy!r} entry reading 'default'>"


def test_the_policy_asked_directly_routes_each_query() -> None:
    """As a plain Django router (no block): writes to the primary, reads to a replica."""
    policy = replicas()
    assert policy.db_for_write(Item) == "default"
    assert {policy.db_for_read(Item), policy.db_for_read(Item)} == set(REPLICAS)


def test_a_failing_choice_leaves_nothing_active_even_with_prevent_writes() -> None:
    """A choose function that raises on entry leaves no route, pin or prevention behind."""

    def failing(_up: tuple[str, ...]) -> str:
        raise LookupError

    block = in_database(policy=replicas(choose=failing), prevent_writes=True)
    with pytest.raises(LookupError):
        block.__enter__()
    with pytest.raises(LookupError):
        asyncio.run(block.__aenter__())


# Writes that skip the router


@pytest.mark.parametrize(
    "write",
    [
        lambda: Item.objects.using("default").create(name="by-using"),
        lambda: (
            connections["default"]
            .cursor()
            .execute("INSERT INTO testapp_item (name) VALUES (%s)", ["by-sql"])
        ),
    ],
    ids=["using", "raw SQL"],
)
def test_a_write_that_skips_the_router_pins_too(write: Any) -> None:
    """The write hook sees a write on the primary's connection, whoever sent it."""
    with in_database(policy=replicas()):
        assert read_alias() in REPLICAS
        write()
        assert read_alias() == "default"


def test_a_write_decided_but_not_made_does_not_pin() -> None:
    """The router's answer for a write is no write: the statement pins, when it runs."""
    with in_database(policy=replicas()):
        assert router.db_for_write(Item) == "default"
        assert Item.objects.select_for_update().db == "default"  # never evaluated
        assert read_alias() in REPLICAS
        Item.objects.filter(name="nothing").update(name="still nothing")  # an UPDATE, 0 rows
        assert read_alias() == "default"


def test_reads_and_other_databases_writes_do_not_pin() -> None:
    """Only a statement that may write, on a primary's connection, pins."""
    with in_database(policy=replicas()):
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM testapp_item")
        Item.objects.using("other").create(name="elsewhere")
        Item.objects.using("replica1").create(name="on-a-replica")
        assert read_alias() in REPLICAS


#: A statement that only reads in the backend's own dialect, not in the SQL standard's.
VENDOR_READS = {
    "sqlite": "PRAGMA table_info(testapp_item)",
    "postgresql": "SELECT $$ DELETE $$",
    "mysql": "DESCRIBE testapp_item",
}


def test_a_read_in_the_backends_own_dialect_does_not_pin() -> None:
    """The hook reads a statement as its backend does: a read of that backend only pins nothing."""
    with in_database(policy=replicas()):
        with connections["default"].cursor() as cursor:
            cursor.execute(VENDOR_READS[connections["default"].vendor])
        assert read_alias() in REPLICAS


@pytest.mark.skipif(
    connections["default"].vendor != "postgresql", reason="psycopg's sql.Composable"
)
def test_a_psycopg_composed_write_pins() -> None:
    """A psycopg.sql statement is read by its text: a composed INSERT pins like a plain one."""
    from psycopg import sql  # noqa: PLC0415 - PostgreSQL only

    insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier("testapp_item"))
    with in_database(policy=replicas()):
        with connections["default"].cursor() as cursor:
            cursor.execute(insert, ["composed"])
        assert read_alias() == "default"
        assert visible("composed")


def test_a_write_outside_every_replica_block_pins_nothing() -> None:
    """Pins live in blocks: a write before the block does not pin the block."""
    replicas()  # its primary is known to the hook
    Item.objects.using("default").create(name="before")
    with in_database(policy=replicas()):
        assert read_alias() in REPLICAS
    assert get_pins() is None


def test_use_primary_inside_a_block_is_remembered_until_the_block_exits() -> None:
    """What the middleware reads to stream a @use_primary view's response from the primary."""
    with in_database(policy=replicas()):
        assert not used_primary()
        with use_primary():
            pass
        assert used_primary()
        assert read_alias() in REPLICAS  # remembered, not in force
    assert used_primary() is False
    with use_primary():
        assert not used_primary()  # outside every block: nothing to remember


def test_a_pin_survives_an_inner_block_left_inside_a_plain_block() -> None:
    """Leaving an inner replica block finds the outer one through the frames between them."""
    policy = replicas()
    with in_database(policy=policy):
        with in_database("other"), in_database(policy=policy):
            Item.objects.create(name="deep")
        assert read_alias() == "default"
        assert visible("deep")


# Positions (read-your-writes by position): their rules, without a server.


def test_a_position_is_reached_only_by_a_replica_of_the_same_cluster_at_or_past_it() -> None:
    """LSNs compare within one cluster; a replica of another (a re-clone, a new primary) never."""
    needed = _positions.Lsn(7, 0x1D008158)
    assert _positions.reached(_positions.Lsn(7, 0x1D008158), needed)
    assert _positions.reached(_positions.Lsn(7, 0x1D008159), needed)
    assert not _positions.reached(_positions.Lsn(7, 0x1D008157), needed)
    assert not _positions.reached(_positions.Lsn(8, 0xFFFFFFFFFF), needed)
    assert not _positions.reached(None, needed)
    assert not _positions.reached(_positions.Lsn(7, 10**12), _positions.PRIMARY_ONLY)


def test_gtids_are_reached_per_domain_by_sequence() -> None:
    """Every domain of the needed GTIDs applied at or past its sequence, whatever the server id."""
    needed = _positions.Gtids(((0, 1, 42), (1, 2, 7)))
    assert _positions.reached(_positions.Gtids(((0, 3, 42), (1, 2, 9))), needed)
    assert not _positions.reached(_positions.Gtids(((0, 1, 41), (1, 2, 9))), needed)
    assert not _positions.reached(_positions.Gtids(((0, 1, 42),)), needed)  # domain 1 missing
    assert not _positions.reached(_positions.Lsn(0, 10**9), needed)


def test_positions_travel_as_text_and_anything_else_is_refused() -> None:
    """pack/unpack round-trip; a malformed or foreign value reads as nothing, never raises."""
    needs = {
        "default": _positions.Lsn(7301234567890, 0x1D008158),
        "tenant": _positions.Gtids(((0, 1, 42), (1, 2, 7))),
        "sqlite": _positions.PRIMARY_ONLY,
    }
    packed = _positions.pack(needs)
    assert set(packed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert _positions.unpack(packed) == needs
    assert _positions.unpack(packed)["sqlite"] is _positions.PRIMARY_ONLY  # type: ignore[index]  # just unpacked
    for bad in ("", "!!", "e30", _positions.pack({}) + "x", 42, None, "W10"):
        assert _positions.unpack(bad) in (None, {})
    assert _positions.load("pg.zz.1") is None
    assert _positions.load("gtid.0-1") is None
    assert _positions.describe(_positions.Lsn(1, 0x1D008158)) == "0/1D008158"
    assert _positions.describe(_positions.Gtids(((0, 1, 42),))) == "0-1-42"


@pytest.mark.usefixtures("_groups_of_this_test")
def test_a_block_needing_a_position_no_replica_is_known_to_have_reads_the_primary() -> None:
    """PRIMARY_ONLY holds the reads of its primary's blocks there; other primaries' are free."""
    with _positions.Needing({"default": _positions.PRIMARY_ONLY}):
        with in_database(policy=replicas()):
            assert Item.objects.all().db == "default"
        with in_database(policy=PrimaryReplica("other", REPLICAS)):
            assert Item.objects.all().db in REPLICAS  # another primary's need: not this one's
    with in_database(policy=replicas()):
        assert Item.objects.all().db in REPLICAS
    assert _positions.NEEDS.get() is None


def test_the_panel_reason_names_the_position_a_read_needs_and_what_the_replica_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """read_reason, which the routing panel shows, gives both positions, as the server says them."""
    needed = _positions.Lsn(7, 0x1D008158)
    replayed = {
        "replica1": _positions.Lsn(7, 0x1D008160),
        "replica2": _positions.Lsn(7, 0x1C000000),
    }
    monkeypatch.setattr(_entry, "replayed_here", replayed.get)
    policy = PrimaryReplica("default", ("replica1",))
    caught_up = _policy.Entry(policy, "replica1", needed)
    assert caught_up.read_reason("replica1") == (
        "the replica chosen on entry, which has replayed 0/1D008160 (this read needs 0/1D008158)"
    )
    behind = _policy.Entry(PrimaryReplica("default", ("replica2",)), None, needed)
    assert behind.read_reason("default") == (
        "the primary, no replica has replayed the position this read needs "
        "(0/1D008158; replica2 at 0/1C000000)"
    )
    by_time = _policy.Entry(policy, "replica1", _positions.PRIMARY_ONLY)
    assert by_time.read_reason("default") == "the primary, pinned after a write (by time)"
    assert by_time.replica is None


def test_a_replica_late_past_max_lag_is_reported_by_the_policy_class_then_caught_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """check_lag: replica_lagging once when it goes late, replica_caught_up once back."""
    lags = iter([2.5, 3.0, 0.25])
    monkeypatch.setattr(_positions, "_lag", lambda _connection: next(lags))
    sent: list[tuple[str, object, str, float]] = []

    def on(name: str) -> Callable[..., None]:
        def receive(sender: object, alias: str, lag: float, **kwargs: Any) -> None:
            sent.append((name, sender, alias, lag))

        return receive

    lagging_receiver, caught_up_receiver = on("lagging"), on("caught up")
    signals.replica_lagging.connect(lagging_receiver)
    signals.replica_caught_up.connect(caught_up_receiver)
    try:
        with caplog.at_level("WARNING", logger="dynroute"):
            assert _positions.check_lag(connections["replica1"], 1.0, PrimaryReplica) is True
            assert _positions.check_lag(connections["replica1"], 1.0, PrimaryReplica) is True
            assert _positions.lagging() == {"replica1": 3.0}
            assert _positions.check_lag(connections["replica1"], 1.0, PrimaryReplica) is False
    finally:
        signals.replica_lagging.disconnect(lagging_receiver)
        signals.replica_caught_up.disconnect(caught_up_receiver)
        _positions.forget()
    assert sent == [
        ("lagging", PrimaryReplica, "replica1", 2.5),
        ("caught up", PrimaryReplica, "replica1", 0.25),
    ]
    assert "replica 'replica1' is 2.5 s behind (max_lag 1 s)" in caplog.text
    assert "replica 'replica1' has caught up (0.2 s behind)" in caplog.text


@pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="SQLite has no replication to be late in",
)
def test_a_server_that_is_not_a_replica_is_never_late() -> None:
    """A "replica" alias on a server not in recovery (or not replicating) has nothing to replay."""
    assert _positions._lag(connections["replica1"]) == 0.0


def test_an_entry_keeps_its_chosen_replica_when_the_cache_shows_it_caught_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both replicas known to have replayed the position: round robin still alternates."""
    needed = _positions.Lsn(7, 0x1D008158)
    replayed = dict.fromkeys(REPLICAS, _positions.Lsn(7, 0x1D008160))
    monkeypatch.setattr(_entry, "replayed_here", replayed.get)
    policy = PrimaryReplica("default", REPLICAS)
    with _positions.Needing({"default": needed}):
        chosen = [_entry.make_entry(policy, ask=False).replica for _ in range(4)]
    assert chosen == ["replica1", "replica2", "replica1", "replica2"]


def test_a_lagging_replica_is_not_usable_while_no_replica_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """usable_replicas leaves out a replica found past max_lag, with nothing marked down."""
    monkeypatch.setitem(_positions.LAGGING, "replica1", 2.5)
    assert not _health.DOWN
    assert _entry.usable_replicas(PrimaryReplica("default", REPLICAS)) == ("replica2",)


class _GtidCursor:
    """A MariaDB primary's cursor, as far as written() uses one."""

    def __init__(self, executed: list[str]) -> None:
        self.executed = executed

    def __enter__(self) -> _GtidCursor:  # noqa: PYI034 - a final test double
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def execute(self, sql: str) -> None:
        self.executed.append(sql)

    def fetchone(self) -> tuple[str]:
        return ("0-1-42,1-2-7",)


def test_a_mariadb_primarys_position_is_its_binlog_gtids() -> None:
    """written() on MariaDB: one query, @@gtid_binlog_pos, read as a GTID list."""
    executed: list[str] = []

    class Primary:
        vendor = "mysql"

        def cursor(self) -> _GtidCursor:
            return _GtidCursor(executed)

    position = _positions.written(Primary())  # type: ignore[arg-type]  # a stand-in
    assert executed == ["SELECT @@gtid_binlog_pos"]
    assert position == _positions.Gtids(((0, 1, 42), (1, 2, 7)))


def test_a_position_that_cannot_be_read_pins_reads_to_the_primary_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The query for a written primary's position fails: PRIMARY_ONLY, and a warning saying so."""

    def failing(wrapper: object) -> object:
        msg = "the server went away"
        raise DatabaseError(msg)

    monkeypatch.setattr(_tracking, "supports", lambda _wrapper: True)
    monkeypatch.setattr(_tracking, "written", failing)
    with in_database(policy=replicas()), caplog.at_level(logging.WARNING, "dynroute"):
        Item.objects.create(name="written")
        positions = _tracking.written_positions()
    assert positions == {"default": _positions.PRIMARY_ONLY}
    assert (
        "dynroute: could not read the position of primary 'default' (DatabaseError): its reads "
        "are pinned to it instead"
    ) in caplog.text
