"""dynroute.atomic() and dynroute.on_commit(): transactions on the database writes go to."""

from __future__ import annotations

import functools
import logging
import threading

import pytest
from django.db import connections, transaction

import dynroute
from dynroute import ReadWrite, in_database
from dynroute.exceptions import RouteStateError, UsageError
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class BoomError(Exception):
    """Raised inside a transaction to roll it back."""


class ItemsToOther:
    """A custom policy: writes of Item go to other."""

    def db_for_read(self, model, /, **hints):
        return None

    def db_for_write(self, model, /, **hints):
        return "other" if model is Item else None


def depth(alias: str) -> int:
    """How many atomic blocks are open on ``alias`` (the test's own included)."""
    return len(connections[alias].atomic_blocks)


def stored(alias: str) -> list[str]:
    """The names of the items in ``alias``, read with .using()."""
    return sorted(Item.objects.using(alias).values_list("name", flat=True))


def create_and_fail(name: str, transaction_block) -> None:
    """Create an item inside ``transaction_block``, then raise out of it."""
    with transaction_block():
        Item.objects.create(name=name)
        raise BoomError


def test_a_rollback_undoes_the_routed_writes():
    """The issue's case: the write and its transaction are both on the block's database."""
    with in_database("other", write=True), pytest.raises(BoomError):
        create_and_fail("lost", dynroute.atomic)
    assert stored("other") == []
    assert stored("default") == []


def test_djangos_atomic_would_have_kept_it():
    """What dynroute.atomic() fixes: Django's opens on default and the row stays."""
    with in_database("other", write=True), pytest.raises(BoomError):
        create_and_fail("kept", transaction.atomic)
    assert stored("other") == ["kept"]


@pytest.mark.parametrize(
    ("block", "alias"),
    [
        pytest.param(lambda: in_database("other", write=True), "other", id="write=True"),
        pytest.param(lambda: in_database(policy=ReadWrite("other")), "other", id="ReadWrite"),
        pytest.param(lambda: in_database("other", read=False, write=True), "other", id="WriteOnly"),
        pytest.param(lambda: in_database("other"), "default", id="read-only: default"),
    ],
)
def test_using_none_is_the_blocks_write_alias(block, alias):
    """A block that routes writes names the database; one that does not leaves default."""
    before = {name: depth(name) for name in ("default", "other")}
    with block(), dynroute.atomic():
        assert depth(alias) == before[alias] + 1
        others = {name for name in before if name != alias}
        assert all(depth(name) == before[name] for name in others)


def test_outside_every_block_it_is_djangos_atomic():
    """No block: "default", as Django's atomic()."""
    before = depth("default")
    with dynroute.atomic():
        assert depth("default") == before + 1
    with pytest.raises(BoomError):
        create_and_fail("lost", dynroute.atomic)
    assert stored("default") == []


def test_a_read_only_block_inside_a_write_block_keeps_the_outer_write_alias():
    """Writes go to the enclosing write route there, and so does the transaction."""
    with in_database("other", write=True), in_database("default"):
        before = depth("other")
        with dynroute.atomic():
            assert depth("other") == before + 1


def test_an_explicit_using_wins():
    """using= names the database whatever the block says."""
    with in_database("other", write=True):
        before = depth("default")
        with dynroute.atomic(using="default"):
            assert depth("default") == before + 1


def test_nested_atomic_makes_a_savepoint():
    """Rolling back the inner block keeps what the outer one wrote."""
    with in_database("other", write=True), dynroute.atomic():
        Item.objects.create(name="outer")
        with pytest.raises(BoomError):
            create_and_fail("inner", dynroute.atomic)
        with dynroute.atomic(savepoint=False):
            Item.objects.create(name="no savepoint")
    assert stored("other") == ["no savepoint", "outer"]


def test_durable_refuses_to_nest_on_the_routed_database():
    """durable=True is checked on the block's database, where it is nested."""
    with (
        in_database("other", write=True),
        dynroute.atomic(),
        pytest.raises(RuntimeError, match="durable"),
        dynroute.atomic(durable=True),
    ):
        pass  # pragma: no cover - never reached
    with in_database("other", write=True), dynroute.atomic(durable=True):
        Item.objects.create(name="durable")
    assert stored("other") == ["durable"]


def test_a_durable_decorated_function_refuses_to_nest_at_every_call():
    """durable=True survives the copy each call of a decorated function makes."""

    @dynroute.atomic(durable=True)
    def durable_write() -> None:
        Item.objects.create(name="durable")

    with in_database("other", write=True):
        durable_write()
        with dynroute.atomic(), pytest.raises(RuntimeError, match="durable"):
            durable_write()
    assert stored("other") == ["durable"]


def test_the_decorator_resolves_the_route_at_each_call():
    """@dynroute.atomic and @dynroute.atomic(): the route in force at the call counts.

    (Decorated here, not at import: mutation testing must see the decorator run.)
    """

    @dynroute.atomic
    def create_then_fail(name: str) -> None:
        Item.objects.create(name=name)
        raise BoomError

    @dynroute.atomic()
    def open_blocks() -> dict[str, int]:
        return {alias: depth(alias) for alias in ("default", "other")}

    with pytest.raises(BoomError), in_database("other", write=True):
        create_then_fail("lost in other")
    with pytest.raises(BoomError):
        create_then_fail("lost in default")
    assert stored("other") == stored("default") == []
    outside = open_blocks()
    with in_database("other", write=True):
        inside = open_blocks()
    assert inside == {"default": outside["default"] - 1, "other": outside["other"] + 1}


def test_one_object_entered_again_under_another_route():
    """Each entry exits on the database it opened."""
    block = dynroute.atomic()
    with in_database("other", write=True), block:
        with in_database("default", write=True), block:
            Item.objects.create(name="in default")
        assert depth("other") > 0
        Item.objects.create(name="in other")
    assert stored("default") == ["in default"]
    assert stored("other") == ["in other"]


MESSAGE = (
    "{0}(using=None) inside in_database(policy=...) cannot tell which database the block "
    'writes to: its policy decides per model. Pass {0}(using=route.alias) or {0}(using="...").'
)


def test_inside_a_custom_policy_using_none_is_refused():
    """A policy that decides writes per model leaves no database to name."""
    with in_database(policy=ItemsToOther()):
        with pytest.raises(UsageError) as raised, dynroute.atomic():
            pass  # pragma: no cover - never reached
        assert str(raised.value) == MESSAGE.format("atomic")
        with pytest.raises(UsageError) as raised:
            dynroute.on_commit(lambda: None)
        assert str(raised.value) == MESSAGE.format("on_commit")
        before = depth("other")
        with dynroute.atomic(using="other"):
            assert depth("other") == before + 1


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_on_commit_runs_when_the_routed_database_commits():
    """Not when default commits: the callback belongs to the block's database."""
    ran: list[str] = []
    with transaction.atomic(using="default"):
        with in_database("other", write=True), dynroute.atomic():
            Item.objects.create(name="x")
            dynroute.on_commit(lambda: ran.append("other"))
            assert ran == []
        assert ran == ["other"]  # other committed; default is still open
        dynroute.on_commit(lambda: ran.append("default"))
        assert ran == ["other"]
    assert ran == ["other", "default"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_on_commit_is_dropped_by_a_rollback_and_robust_logs(caplog):
    """Django's on_commit rules, on the routed database."""
    ran: list[str] = []

    def fail() -> None:
        raise BoomError

    def register_and_fail() -> None:
        with dynroute.atomic():
            dynroute.on_commit(lambda: ran.append("rolled back"))
            raise BoomError

    with in_database("other", write=True), pytest.raises(BoomError):
        register_and_fail()
    with (
        caplog.at_level(logging.ERROR, logger="django.db.backends.base"),
        in_database("other", write=True),
        dynroute.atomic(),
    ):
        dynroute.on_commit(fail, robust=True)
        dynroute.on_commit(lambda: ran.append("after"))
    assert ran == ["after"]
    assert "Error calling" in caplog.text
    with in_database("other", write=True):
        dynroute.on_commit(lambda: ran.append("at once"))  # no transaction open
    assert ran == ["after", "at once"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_a_decorated_function_runs_in_two_threads_at_once():
    """Each call has its own entry: one thread's route never ends another's transaction."""
    inside = threading.Barrier(2, timeout=10)
    seen: dict[str, dict[str, int]] = {}

    @dynroute.atomic
    def hold(name: str) -> None:
        inside.wait()  # both threads are inside their transaction
        seen[name] = {alias: depth(alias) for alias in ("default", "other")}
        inside.wait()

    def run(name: str, alias: str) -> None:
        try:
            with in_database(alias, write=True):
                hold(name)
            seen[name + " after"] = {a: depth(a) for a in ("default", "other")}
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=("a", "other")),
        threading.Thread(target=run, args=("b", "default")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {
        "a": {"default": 0, "other": 1},
        "b": {"default": 1, "other": 0},
        "a after": {"default": 0, "other": 0},
        "b after": {"default": 0, "other": 0},
    }


def test_a_decorator_with_using_keeps_it_at_every_call():
    """@dynroute.atomic(using="other") opens on other, whatever the route of the call."""

    @dynroute.atomic(using="other")
    def open_blocks() -> dict[str, int]:
        return {alias: depth(alias) for alias in ("default", "other")}

    before = {alias: depth(alias) for alias in ("default", "other")}
    assert open_blocks() == {"default": before["default"], "other": before["other"] + 1}
    with in_database("default", write=True):
        assert open_blocks() == {"default": before["default"], "other": before["other"] + 1}


def test_the_bare_decorator_makes_a_savepoint_and_is_not_durable():
    """@dynroute.atomic nests as Django's does: a savepoint inside, no durable check."""

    @dynroute.atomic
    def create_then_fail(name: str) -> None:
        Item.objects.create(name=name)
        raise BoomError

    with in_database("other", write=True), dynroute.atomic():
        Item.objects.create(name="outer")
        with pytest.raises(BoomError):
            create_then_fail("inner")
        Item.objects.create(name="after")  # the outer transaction is still usable
    assert stored("other") == ["after", "outer"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_on_commit_with_using_outside_any_block():
    """using= names the database: the callback waits for its commit."""
    ran: list[str] = []
    with transaction.atomic(using="other"):
        dynroute.on_commit(lambda: ran.append("other"), using="other")
        assert ran == []
    assert ran == ["other"]


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_on_commit_is_not_robust_unless_asked():
    """Without robust=True, a failing callback's exception propagates, as in Django."""

    def fail() -> None:
        raise BoomError

    with pytest.raises(BoomError), in_database("other", write=True), dynroute.atomic():
        dynroute.on_commit(fail)


def test_one_object_entered_by_two_threads_at_once():
    """Each thread's entry leaves its own transaction, whatever order they end in."""
    block = dynroute.atomic()
    inside = threading.Barrier(2, timeout=10)
    first_out = threading.Event()
    seen: dict[str, object] = {}

    def run(name: str, alias: str) -> None:
        try:
            with in_database(alias, write=True):
                before = depth(alias)
                with block:
                    seen[name] = depth(alias) - before
                    inside.wait()
                    if name == "b":
                        first_out.wait(timeout=10)
                if name == "a":
                    first_out.set()
                seen[name + " after"] = depth(alias) - before
        except BaseException as error:
            seen[name] = error
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=args) for args in (("a", "other"), ("b", "default"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {"a": 1, "b": 1, "a after": 0, "b after": 0}


def test_a_coroutine_function_is_refused():
    """Django's atomic would end before the coroutine's body ran: refused, saying why."""

    async def report() -> None:
        pass  # pragma: no cover - never called

    with pytest.raises(UsageError) as raised:
        dynroute.atomic(report)
    assert str(raised.value) == (
        "dynroute.atomic cannot decorate the coroutine function "
        "test_a_coroutine_function_is_refused.<locals>.report: its body would run after "
        "the transaction ended. Use it on a sync function called through sync_to_async()."
    )
    with pytest.raises(UsageError) as raised:
        dynroute.atomic(using="other")(functools.partial(report))
    assert str(raised.value).startswith(
        f"dynroute.atomic cannot decorate the coroutine function {functools.partial(report)!r}: "
    )


def test_a_failed_entry_leaves_nothing_behind():
    """durable=True refused inside a transaction: the object can be entered again after."""
    block = dynroute.atomic(durable=True)
    with in_database("other", write=True):
        with dynroute.atomic(), pytest.raises(RuntimeError, match="durable"), block:
            pass  # pragma: no cover - never reached
        with block:
            Item.objects.create(name="durable")
    assert stored("other") == ["durable"]
    with pytest.raises(RouteStateError) as raised:
        block.__exit__(None, None, None)
    assert str(raised.value) == LEFT_WRONGLY


LEFT_WRONGLY = (
    "dynroute.atomic() was left without being the innermost active here: an atomic block "
    "is left in the thread or task that entered it, innermost first, once per entry."
)


def test_leaving_an_outer_atomic_first_is_refused():
    """The inner one stays active, and both can still be left in order."""
    outer, inner = dynroute.atomic(), dynroute.atomic()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RouteStateError) as raised:
        outer.__exit__(None, None, None)
    assert str(raised.value) == LEFT_WRONGLY
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
