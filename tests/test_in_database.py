"""in_database as a context manager: where reads and writes go, nesting, reuse, errors."""

from __future__ import annotations

import threading

import pytest
from django.db import router
from django.utils.connection import ConnectionDoesNotExist

from dynroute import PrimaryReplica, Route, in_database
from dynroute.core._stack import CURRENT
from dynroute.exceptions import RouteStateError, UnknownDatabaseError, UsageError
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


def names(alias: str) -> list[str]:
    """The names of the items stored in ``alias``, read without any routing."""
    return sorted(Item.objects.using(alias).values_list("name", flat=True))


def test_write_only_reads_from_default():
    """read=False, write=True: writes go to the target, reads stay on default."""
    Item.objects.create(name="in default")
    with in_database("other", read=False, write=True):
        Item.objects.create(name="in other")
        assert [i.name for i in Item.objects.all()] == ["in default"]
    assert names("other") == ["in other"]


def test_routing_ends_with_the_block():
    """After the block, queries go where they went before it."""
    Item.objects.using("other").create(name="x")
    with in_database("other"):
        assert Item.objects.count() == 1
    assert Item.objects.count() == 0
    assert router.db_for_read(Item) == "default"
    assert router.db_for_write(Item) == "default"


def test_nested_blocks_restore_the_enclosing_route():
    """An inner block overrides the outer one and gives it back on exit."""
    with in_database("other", write=True):
        assert router.db_for_write(Item) == "other"
        with in_database("default", write=True):
            assert router.db_for_read(Item) == "default"
            assert router.db_for_write(Item) == "default"
        assert router.db_for_read(Item) == "other"
        assert router.db_for_write(Item) == "other"


def test_a_disabled_direction_falls_back_to_the_enclosing_block():
    """An inner read-only block leaves writes to the outer block's target."""
    with in_database("other", write=True), in_database("default"):
        assert router.db_for_read(Item) == "default"
        assert router.db_for_write(Item) == "other"
        Item.objects.create(name="falls back")
    assert names("other") == ["falls back"]


def test_the_route_is_restored_after_an_exception():
    """An exception leaving the block restores the enclosing route."""

    def fail_inside() -> None:
        with in_database("other", write=True):
            _ = 1 / 0

    with in_database("default", write=True):
        with pytest.raises(ZeroDivisionError):
            fail_inside()
        assert router.db_for_write(Item) == "default"
    assert CURRENT.get() is None


def test_as_gives_the_route():
    """``with in_database(...) as route`` gives the alias and the policy."""
    block = in_database("other", write=True)
    with block as route:
        assert isinstance(route, Route)
        assert route.alias == "other"
        assert route.policy.db_for_write(Item) == "other"
        assert Item.objects.using(route.alias).count() == 0
    assert block.route is route


def test_one_block_object_can_be_reused_and_nested_in_itself():
    """The same block can be entered again after exit, and inside itself."""
    block = in_database("other", write=True)
    for _ in range(3):
        with block:
            Item.objects.create(name="n")
    with block, block:
        assert router.db_for_write(Item) == "other"
    assert CURRENT.get() is None
    assert len(names("other")) == 3


def test_an_unknown_alias_fails_at_entry_naming_it_and_the_configured_ones():
    """A misspelt alias fails when the block is entered, before any query."""
    block = in_database("othre")  # building the block does not check settings
    with pytest.raises(UnknownDatabaseError) as caught, block:
        pytest.fail("the body must not run")
    message = str(caught.value)
    assert "'othre'" in message
    assert "'default'" in message
    assert "'other'" in message
    assert CURRENT.get() is None


def test_unknown_alias_errors_are_also_djangos_connection_does_not_exist():
    """Code catching Django's ConnectionDoesNotExist keeps working."""
    with pytest.raises(ConnectionDoesNotExist), in_database("missing"):
        pass


def test_leaving_a_block_that_is_not_active_is_an_error():
    """__exit__ without a matching __enter__ in this context raises RouteStateError."""
    block = in_database("other")
    with pytest.raises(RouteStateError, match="left without being active"):
        block.__exit__(None, None, None)


def test_leaving_a_block_twice_is_an_error():
    """A block is left once per entry: a second __exit__ raises RouteStateError."""
    block = in_database("other")
    with block:
        pass
    with pytest.raises(RouteStateError, match="once per entry"):
        block.__exit__(None, None, None)


def test_leaving_an_outer_block_first_restores_the_route_before_it_and_warns(caplog):
    """Out of order: the outer block's exit drops the inner ones, says so, raises nothing.

    This is what a generator suspended inside a block and abandoned does. Raising
    from the outer ``__exit__`` would hide the exception leaving the block, if any,
    and could not restore anything more.
    """
    with in_database("other", write=True):
        outer = in_database("default")
        inner = in_database("other", read=False, write=False)
        outer.__enter__()
        inner.__enter__()  # never left, as by a generator abandoned inside a block
        outer.__exit__(None, None, None)
        assert (router.db_for_read(Item), router.db_for_write(Item)) == ("other", "other")
    assert CURRENT.get() is None
    assert "dropped with it" in caplog.text
    assert "1 block(s)" in caplog.text


def test_an_inner_block_dropped_by_an_outer_exit_cannot_be_left_again():
    """After the outer block dropped it, leaving the inner block is a RouteStateError."""
    outer, inner = in_database("other"), in_database("default", write=True)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    with pytest.raises(RouteStateError):
        inner.__exit__(None, None, None)
    assert CURRENT.get() is None


@pytest.mark.django_db(databases=["default", "other", "replica1"], transaction=True)
def test_a_primary_replica_block_dropped_by_an_outer_exit_forgets_its_writes(caplog):
    """Its reads pinned to the primary by a write end with it: the next block reads a replica."""
    policy = PrimaryReplica("default", ["replica1"])
    with in_database("other"):
        in_database(policy=policy).__enter__()  # never left, as by an abandoned generator
        Item.objects.create(name="written")
        assert Item.objects.all().db == "default"
    assert "dropped with it" in caplog.text
    with in_database(policy=policy):
        assert Item.objects.all().db == "replica1"


def test_a_block_entered_in_another_thread_cannot_be_left_here():
    """A block is left in the thread that entered it; elsewhere it is a RouteStateError."""
    block = in_database("other")
    errors: list[BaseException] = []

    def leave_here() -> None:
        try:
            block.__exit__(None, None, None)
        except RouteStateError as error:
            errors.append(error)

    with block:
        thread = threading.Thread(target=leave_here)
        thread.start()
        thread.join()
        assert router.db_for_read(Item) == "other"
    assert len(errors) == 1


@pytest.mark.parametrize("flag", ["read", "write"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_must_be_bool(flag, value):
    """read= and write= refuse anything but True and False, naming the flag."""
    with pytest.raises(UsageError, match=flag):
        in_database("other", **{flag: value})


def test_blocks_for_the_same_alias_and_flags_are_shared():
    """in_database('x') hands out one shared block per alias and flags."""
    assert in_database("other") is in_database("other")
    assert in_database("other", write=True) is in_database("other", write=True)
    assert in_database("other") is not in_database("other", write=True)
    assert in_database("other", read=True) is not in_database("other")  # spelt differently


def test_a_shared_block_never_stands_in_for_invalid_flags():
    """read=1 equals True, yet it is refused even after a read=True block was made."""
    in_database("other", read=True)
    with pytest.raises(UsageError, match="read"):
        in_database("other", read=1)
    with pytest.raises(UsageError, match="write"):
        in_database("other", write=0.0)


def test_an_unknown_alias_keeps_failing_on_every_entry():
    """Only a found alias is remembered; a missing one fails at each entry."""
    block = in_database("missing_alias")
    for _ in range(2):
        with pytest.raises(UnknownDatabaseError), block:
            pass
