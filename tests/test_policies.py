"""Routing policies: built-in strategies, custom policies, and how blocks combine them."""

from __future__ import annotations

import pytest
from django.db import router

from dynroute import DatabaseAlias, ReadOnly, ReadWrite, WriteOnly, in_database
from dynroute.exceptions import UsageError
from tests.testapp.models import Author, Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class ByModel:
    """A custom policy: authors live in 'other', everything else has no opinion."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, type, dict[str, object]]] = []

    def db_for_read(self, model, /, **hints):
        self.calls.append(("read", model, hints))
        return "other" if model is Author else None

    def db_for_write(self, model, /, **hints):
        self.calls.append(("write", model, hints))
        return "other" if model is Author else None


@pytest.mark.parametrize(
    ("strategy", "read", "write"),
    [(ReadOnly, "x", None), (ReadWrite, "x", "x"), (WriteOnly, None, "x")],
)
def test_strategies_answer_for_their_directions_only(strategy, read, write):
    """Each strategy names its target for the directions it routes, None otherwise."""
    policy = strategy("x")
    assert policy.db_for_read(Item) == read
    assert policy.db_for_write(Item) == write
    assert policy.target == DatabaseAlias("x")


@pytest.mark.parametrize(
    ("flags", "strategy"),
    [
        ({}, ReadOnly),
        ({"write": True}, ReadWrite),
        ({"read": False, "write": True}, WriteOnly),
        ({"read": True, "write": False}, ReadOnly),
    ],
)
def test_flags_stand_for_a_strategy(flags, strategy):
    """in_database(t, read=r, write=w) is in_database(policy=Strategy(t))."""
    assert in_database("other", **flags).route.policy == strategy("other")
    with in_database("other", **flags):
        by_flags = (router.db_for_read(Item), router.db_for_write(Item))
    with in_database(policy=strategy("other")):
        by_policy = (router.db_for_read(Item), router.db_for_write(Item))
    assert by_flags == by_policy


def test_read_false_write_false_routes_nothing_but_names_the_target():
    """Both flags off: no query is routed, yet route.alias names the target."""
    with in_database("other", read=False, write=False) as route:
        assert route.alias == "other"
        assert router.db_for_read(Item) == "default"
        assert router.db_for_write(Item) == "default"


def test_strategies_are_values():
    """Strategies compare equal by kind and target, and show both in repr."""
    assert ReadOnly("x") == ReadOnly("x")
    assert ReadOnly("x") != ReadWrite("x")
    assert hash(ReadWrite("x")) == hash(ReadWrite(DatabaseAlias("x")))
    assert repr(WriteOnly("x")) == "WriteOnly(target=DatabaseAlias(alias='x'))"


def test_a_custom_policy_is_any_class_with_the_two_methods():
    """A plain class routes per model and per query, with Django's hints."""
    policy = ByModel()
    Author.objects.using("other").create(name="Ada")
    with in_database(policy=policy) as route:
        assert route.alias is None
        assert Author.objects.get().name == "Ada"
        assert Item.objects.count() == 0  # no opinion: default
    assert ("read", Author, {}) in policy.calls


def test_a_custom_policy_gets_the_instance_hint_on_save():
    """Saving an object passes Django's instance hint to the policy."""
    policy = ByModel()
    with in_database(policy=policy):
        author = Author.objects.create(name="Grace")
        author.name = "Grace H."
        author.save()
    hints = [hints for kind, model, hints in policy.calls if kind == "write" and hints]
    assert hints
    assert hints[-1]["instance"] is author
    assert Author.objects.using("other").get().name == "Grace H."


def test_no_opinion_from_a_custom_policy_falls_back_to_the_enclosing_block():
    """A custom policy's None defers to the block around it."""
    with in_database("other", write=True), in_database(policy=ByModel()):
        assert router.db_for_read(Item) == "other"
        assert router.db_for_write(Author) == "other"
        with in_database("default"):
            assert router.db_for_read(Author) == "default"
            assert router.db_for_write(Author) == "other"


def test_a_strategy_inside_a_custom_policy_defers_through_it():
    """A read-only block inside a custom one sends writes to the custom policy."""
    with in_database(policy=ByModel()), in_database("default"):
        assert router.db_for_write(Author) == "other"
        assert router.db_for_write(Item) == "default"


@pytest.mark.parametrize("strategy", [ReadOnly, ReadWrite, WriteOnly])
def test_a_subclass_overriding_a_strategy_is_asked_per_query(strategy):
    """A subclass of a built-in strategy that overrides its methods is honoured.

    The built-in strategies are precomputed once per block; a subclass must not be
    taken for one of them (type checkers refuse the subclass, Python does not).
    """

    class ItemsElsewhere(strategy):
        def db_for_read(self, model, /, **hints):
            return "other" if model is Item else None

        def db_for_write(self, model, /, **hints):
            return "other" if model is Item else None

    with in_database(policy=ItemsElsewhere("default")) as route:
        assert route.alias is None  # not a fixed target: asked per query
        assert router.db_for_read(Item) == "other"
        assert router.db_for_write(Item) == "other"
        assert router.db_for_read(Author) == "default"
        assert router.db_for_write(Author) == "default"


def test_a_falsy_answer_is_no_opinion():
    """A policy answering '' defers, as Django's routers do."""

    class Empty:
        def db_for_read(self, model, /, **hints):
            return ""

        def db_for_write(self, model, /, **hints):
            return ""

    with in_database("other"), in_database(policy=Empty()):
        assert router.db_for_read(Item) == "other"


@pytest.mark.parametrize("policy", [object(), 3, "other"])
def test_policy_must_have_both_methods(policy):
    """policy= refuses objects without db_for_read/db_for_write, naming what is missing."""
    with pytest.raises(UsageError, match="db_for_read"):
        in_database(policy=policy)


def test_policy_must_be_an_instance():
    """policy=ReadOnly (the class) is refused with the fix in the message."""
    with pytest.raises(UsageError, match=r"instantiate it"):
        in_database(policy=ReadOnly)


def test_target_and_policy_together_or_neither_are_refused():
    """Exactly one of target and policy= is required."""
    with pytest.raises(UsageError, match="not both"):
        in_database("other", policy=ReadOnly("other"))
    with pytest.raises(UsageError, match="needs a target"):
        in_database()


def test_flags_with_a_policy_are_refused():
    """read=/write= only make sense with a target."""
    with pytest.raises(UsageError, match="not with policy"):
        in_database(policy=ReadOnly("other"), write=True)
