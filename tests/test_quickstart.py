"""django-dynamic-db-router's quickstart, for configured aliases, through both imports.

Every scenario runs twice: with ``from dynroute import in_database`` and the
``dynroute.DynamicDbRouter`` router, and with ``from dynamic_db_router import
in_database`` and the router setting the old package documented.
"""

from __future__ import annotations

import importlib

import pytest

from tests.testapp.models import Item, MyModel

pytestmark = pytest.mark.django_db(databases=["default", "other"])

EXTERNAL = "other"  # the quickstart's 'external' database


@pytest.fixture(params=["dynroute", "dynamic_db_router"])
def in_database(request, settings):
    """``in_database`` from the module under test, with that module's router installed."""
    module = importlib.import_module(request.param)
    settings.DATABASE_ROUTERS = [f"{request.param}.DynamicDbRouter"]
    return module.in_database


def complex_query_function(queryset):
    """Stands for third-party code that runs queries of its own."""
    return {"filtered": queryset.count(), "all": MyModel.objects.count()}


def test_queries_in_the_block_and_in_called_code_go_to_the_database(in_database):
    """The quickstart's first example: the filter and the called code both read 'external'."""
    MyModel.objects.using(EXTERNAL).create(field_a="okay")
    MyModel.objects.using(EXTERNAL).create(field_a="not okay")
    MyModel.objects.using("default").create(field_a="okay")
    with in_database(EXTERNAL):
        queryset = MyModel.objects.filter(field_a="okay")
        output = complex_query_function(queryset)
    assert output == {"filtered": 1, "all": 2}


def test_outside_the_block_queries_go_to_default(in_database):
    """Queries route to 'default' again after the block."""
    MyModel.objects.using(EXTERNAL).create(field_a="x")
    with in_database(EXTERNAL):
        assert MyModel.objects.count() == 1
    assert MyModel.objects.count() == 0


def test_write_true_creates_in_the_database(in_database):
    """``in_database('external', write=True)``: create() writes to 'external'."""
    with in_database(EXTERNAL, write=True):
        MyModel.objects.create(field_a="bad", field_b=17774)
    assert MyModel.objects.using(EXTERNAL).get().field_b == 17774
    assert not MyModel.objects.using("default").exists()


def test_write_false_does_not_fail_but_writes_to_default(in_database):
    """With write=False the object is still created, in 'default'."""
    with in_database(EXTERNAL, write=False):
        MyModel.objects.create(field_a="bad", field_b=17774)
    assert MyModel.objects.using("default").get().field_b == 17774
    assert not MyModel.objects.using(EXTERNAL).exists()


def test_read_false_reads_from_default(in_database):
    """The same holds for read=False: reads go to 'default'."""
    MyModel.objects.using("default").create(field_a="d")
    with in_database(EXTERNAL, read=False, write=True):
        assert [m.field_a for m in MyModel.objects.all()] == ["d"]


def test_the_defaults_are_read_true_write_false(in_database):
    """Without flags, reads go to the database and writes to 'default'."""
    MyModel.objects.using(EXTERNAL).create(field_a="e")
    with in_database(EXTERNAL):
        assert MyModel.objects.get().field_a == "e"
        MyModel.objects.create(field_a="new")
    assert MyModel.objects.using("default").get().field_a == "new"


def test_the_decorator_routes_every_call(in_database):
    """The quickstart's get_external_models_count, called twice."""

    @in_database(EXTERNAL)
    def get_external_models_count(models):
        return {model: model.objects.count() for model in models}

    MyModel.objects.using(EXTERNAL).create(field_a="a")
    Item.objects.using(EXTERNAL).create(name="i")
    Item.objects.using(EXTERNAL).create(name="j")
    expected = {MyModel: 1, Item: 2}
    assert get_external_models_count([MyModel, Item]) == expected
    assert get_external_models_count([MyModel, Item]) == expected


def test_the_decorator_takes_the_same_flags(in_database):
    """``@in_database('external', write=True)`` routes the writes of every call."""

    @in_database(EXTERNAL, write=True)
    def create(name):
        return MyModel.objects.create(field_a=name)

    create("a")
    create("b")
    assert MyModel.objects.using(EXTERNAL).count() == 2


def test_nested_blocks_restore_the_outer_database(in_database):
    """The old package's recursive context-manager test."""
    with in_database(EXTERNAL, write=True):
        MyModel.objects.create(field_a="Arnold")
        with in_database("default", write=True):
            pass
        assert MyModel.objects.count() == 1


def test_a_bad_target_is_a_value_error(in_database):
    """``in_database(2)`` raises ValueError, as the old package's test expects."""
    with pytest.raises(ValueError):  # noqa: PT011 - the old contract is a bare ValueError
        in_database(2)


def test_the_drop_in_accepts_the_old_positional_flags(settings):
    """``dynamic_db_router.in_database(db, read, write)`` keeps its old signature."""
    from dynamic_db_router import in_database  # noqa: PLC0415 - the import under test

    settings.DATABASE_ROUTERS = ["dynamic_db_router.router.DynamicDbRouter"]
    with in_database(database=EXTERNAL, read=True, write=True):
        MyModel.objects.create(field_a="kw")
    with in_database(EXTERNAL, False, True):  # noqa: FBT003 - the old positional form
        MyModel.objects.create(field_a="positional")
        assert MyModel.objects.count() == 0
    assert MyModel.objects.using(EXTERNAL).count() == 2
