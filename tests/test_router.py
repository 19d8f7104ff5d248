"""DynamicDbRouter: Django's router contract, outside and inside blocks."""

from __future__ import annotations

import pytest
from django.db import connection, router, transaction

from dynroute import DynamicDbRouter, in_database
from tests.testapp.models import Author, Book, Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class EverythingToOther:
    """A router placed after dynroute's, to see when it is consulted."""

    def db_for_read(self, model, **hints):
        return "other"

    def db_for_write(self, model, **hints):
        return "other"


def test_outside_every_block_the_router_has_no_opinion():
    """db_for_read/db_for_write return None when no block is active."""
    dynamic = DynamicDbRouter()
    assert dynamic.db_for_read(Item) is None
    assert dynamic.db_for_write(Item) is None
    assert dynamic.db_for_read(None) is None  # the old package's tests pass None


def test_the_routers_after_it_decide_what_no_block_routes(settings):
    """With no opinion from dynroute, the next router in DATABASE_ROUTERS decides."""
    settings.DATABASE_ROUTERS = ["dynroute.DynamicDbRouter", EverythingToOther()]
    assert router.db_for_read(Item) == "other"
    with in_database("default"):
        assert router.db_for_read(Item) == "default"
        assert router.db_for_write(Item) == "other"


def test_a_write_route_beats_the_instance_hint():
    """Inside a write route, saving an object from elsewhere writes to the route."""
    Author.objects.using("default").create(name="Ada")
    author = Author.objects.using("default").get()
    with in_database("other", write=True):
        author.save()
    assert Author.objects.using("other").filter(name="Ada").exists()


def test_an_object_read_in_a_read_only_block_is_saved_back_to_its_own_database():
    """Without a write route, Django's instance hint sends a save where the object came from."""
    Author.objects.using("other").create(name="Ada")
    with in_database("other"):
        author = Author.objects.get()
        author.name = "Ada L."
        author.save()
    author.name = "Ada Lovelace"
    author.save()  # after the block too
    assert Author.objects.using("other").get().name == "Ada Lovelace"
    assert not Author.objects.using("default").exists()


@pytest.mark.django_db(databases=["default", "other"], transaction=True)
def test_transactions_and_django_db_connection_stay_on_default_inside_a_block():
    """atomic() and django.db.connection mean "default" inside a block, as the README warns.

    So an atomic() rollback inside a write route to "other" keeps the row written
    there; ``transaction.atomic(using=route.alias)`` is the way to cover it.
    """
    with in_database("other", write=True) as route:
        assert connection.alias == "default"
        with transaction.atomic():
            assert transaction.get_connection().in_atomic_block
            assert not transaction.get_connection(route.alias).in_atomic_block
            Item.objects.create(name="kept despite the rollback")
            transaction.set_rollback(True)
        with transaction.atomic(using=route.alias):
            Item.objects.create(name="rolled back")
            transaction.set_rollback(True, using=route.alias)
    assert list(Item.objects.using("other").values_list("name", flat=True)) == [
        "kept despite the rollback"
    ]


def test_allow_relation_has_no_opinion():
    """Relations follow Django's rule: same database only, unless another router allows."""
    dynamic = DynamicDbRouter()
    ada_default = Author.objects.using("default").create(name="Ada")
    ada_other = Author.objects.using("other").create(name="Ada")
    assert dynamic.allow_relation(ada_default, ada_other) is None
    book = Book(title="Notes", author=ada_other)
    book.save(using="other")
    with pytest.raises(ValueError, match="router prevents this relation"):
        Book(title="Notes", author=ada_other).author = ada_default


def test_allow_migrate_has_no_opinion():
    """Migrations are never routed by blocks: every database may migrate every model."""
    dynamic = DynamicDbRouter()
    assert dynamic.allow_migrate("other", "testapp") is None
    assert dynamic.allow_migrate("other", "testapp", model_name="item", model=Item) is None
    with in_database("other", write=True):
        assert router.allow_migrate_model("default", Item) is True
        assert router.allow_migrate_model("other", Item) is True


def test_a_queryset_built_in_a_block_runs_where_the_route_is_when_evaluated():
    """Querysets are lazy: routing happens when they run, not when they are built."""
    Item.objects.using("other").create(name="o")
    with in_database("other"):
        lazy = Item.objects.all()
    assert lazy.count() == 0
    with in_database("other"):
        assert lazy.count() == 1


def test_using_beats_the_route():
    """An explicit .using() is never overridden by a block."""
    Item.objects.using("default").create(name="d")
    with in_database("other", write=True):
        assert Item.objects.using("default").count() == 1
        Item.objects.using("default").create(name="explicit")
    assert Item.objects.using("default").count() == 2
