"""connections.settings while runtime aliases come and go: safe to read, cheap to change."""

from __future__ import annotations

import sys
import threading

import pytest
from django.db import connections

from dynroute import in_database
from dynroute.core import blank_literals
from dynroute.runtime._published import _HOLE, Published
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(databases=["default", "other"])


def test_djangos_own_dict_is_back_when_the_last_runtime_alias_goes(runtime):
    """While a runtime alias is registered it is in connections.settings; then it is not."""
    django_dict = connections.settings
    with in_database(runtime) as route:
        assert route.alias in connections.settings
        assert connections.settings[route.alias]["NAME"] == runtime["NAME"]
        assert dict(connections.settings.items()).keys() == {*django_dict, route.alias}
    assert connections.settings is django_dict


def test_readers_iterating_the_aliases_while_blocks_register_them_never_fail(runtime, fresh_alias):
    """Two threads iterate the aliases (as close_old_connections does) during 200 entries."""
    stop = threading.Event()
    errors: list[BaseException] = []
    rounds = [0, 0]

    def reader(index: int) -> None:
        try:
            while not stop.is_set():
                for alias, settings in connections.settings.items():
                    assert settings is connections.settings.get(alias, settings)
                for settings in connections.settings.values():
                    assert "ENGINE" in settings
                rounds[index] += 1
        except BaseException as error:  # reported below
            errors.append(error)

    readers = [threading.Thread(target=reader, args=(index,)) for index in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch mid-iteration, and the blocks get their turn
    for thread in readers:
        thread.start()
    try:
        for number in range(200):
            with in_database(runtime, alias=fresh_alias(f"churn{number % 7}")):
                Item.objects.exists()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert all(rounds)


def test_the_published_mapping_keeps_order_skips_removed_aliases_and_compacts():
    """Order of addition, each alias once, holes dropped when they are half the list."""
    published = Published({"default": {"NAME": "d"}})
    for number in range(40):
        published.add(f"a{number}", {"NAME": number})
    for number in range(0, 40, 2):
        published.remove(f"a{number}")
    published.add("a0", {"NAME": "again"})
    expected = ["default", *(f"a{number}" for number in range(1, 40, 2)), "a0"]
    assert list(published) == expected
    assert len(published) == len(expected)
    assert published["a0"] == {"NAME": "again"}
    assert "a2" not in published
    with pytest.raises(KeyError):
        published["a2"]
    for number in range(1, 40, 2):
        published.remove(f"a{number}")
    assert list(published) == ["default", "a0"]
    assert dict(published.items()) == {"default": {"NAME": "d"}, "a0": {"NAME": "again"}}
    assert list(published.values()) == [{"NAME": "d"}, {"NAME": "again"}]
    # Compacted on the way: the holes left are few, and the places point at the aliases.
    assert len(published._order) < 43
    assert published._order.count(_HOLE) == published._holes <= 16
    assert all(published._order[place] == alias for alias, place in published._places.items())


def test_an_iteration_begun_before_a_compaction_ends_on_the_old_order():
    """A reader's iteration keeps the list it started on; removed aliases are skipped."""
    published = Published({f"a{number}": {} for number in range(40)})
    reading = iter(published)
    assert next(reading) == "a0"
    for number in range(1, 30):
        published.remove(f"a{number}")  # compacts on the way
    assert list(reading) == [f"a{number}" for number in range(30, 40)]


def test_holes_are_dropped_when_over_16_and_over_half_the_list():
    """Compaction waits for both: a few holes in a long list, or many in a short one, stay."""
    long = Published({f"a{number}": {} for number in range(40)})
    for number in range(20):
        long.remove(f"a{number}")
        assert len(long._order) == 40  # 20 holes are half of 40, not over it
    long.remove("a20")
    assert long._order == [f"a{number}" for number in range(21, 40)]
    assert long._holes == 0
    short = Published({f"b{number}": {} for number in range(20)})
    for number in range(16):
        short.remove(f"b{number}")
        assert len(short._order) == 20  # 16 holes are not over 16
    short.remove("b16")
    assert short._order == ["b17", "b18", "b19"]


def test_registering_and_dropping_aliases_changes_one_mapping_in_place(runtime, tmp_path):
    """No copy per registration: the second alias joins the first's mapping, and leaves it."""
    other = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "other.db")}
    with in_database(other):
        mapping = connections.settings
        assert type(mapping) is Published
        with in_database(runtime) as inner:
            assert connections.settings is mapping
            assert inner.alias in mapping
        assert connections.settings is mapping
        assert inner.alias not in mapping


def test_code_that_assigns_into_the_settings_still_can(runtime):
    """Assigning and deleting an alias work as on Django's dict, beside runtime aliases.

    django-dynamic-db-router and test helpers add databases so.
    """
    with in_database(runtime) as route:
        added = dict(connections.settings["default"])
        connections.databases["added_by_hand"] = added
        assert connections.settings["added_by_hand"] is added
        assert list(connections.settings)[-1] == "added_by_hand"
        connections.databases["added_by_hand"] = connections.settings["other"]
        assert connections.settings["added_by_hand"] is connections.settings["other"]
        del connections.databases["added_by_hand"]
        assert "added_by_hand" not in connections.settings
        assert route.alias in connections.settings
        with pytest.raises(KeyError):
            del connections.databases["added_by_hand"]


def test_the_settings_show_their_aliases_in_order_never_their_settings(runtime):
    """The repr of connections.settings with a runtime alias: the aliases in order, no settings."""
    with in_database(runtime) as route:
        shown = repr(connections.settings)
    aliases = ", ".join(repr(alias) for alias in [*connections.settings, route.alias])
    assert shown == f"<dynroute's connections.settings: {aliases}>"
    assert "PASSWORD" not in shown


def test_settings_replaced_by_other_code_lose_only_the_alias_that_goes(runtime, tmp_path):
    """Code that replaced connections.settings with a dict of its own keeps it, less the alias."""
    other = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "other.db")}
    django_dict = connections.settings
    with in_database(other) as staying:
        with in_database(runtime) as leaving:
            replaced = dict(connections.settings.items())  # as a test helper might
            connections.settings = replaced
        assert type(connections.settings) is dict
        assert set(connections.settings) == set(replaced) - {leaving.alias}
        assert staying.alias in connections.settings
    assert connections.settings == django_dict
    connections.settings = django_dict  # the test's own replacement undone


def test_literals_are_blanked_for_display_names_and_placeholders_kept():
    """What the routing panel shows of a statement: no value written into the SQL."""
    sql = """SELECT "t"."name" FROM "t" WHERE "t"."name" = 'secret' AND x = %s -- note"""
    assert blank_literals(sql, "postgresql") == (
        'SELECT "t"."name" FROM "t" WHERE "t"."name" = ? AND x = %s'
    )
    assert blank_literals("SELECT `a` FROM `b` WHERE c = 'v'", "mysql") == (
        "SELECT `a` FROM `b` WHERE c = ?"
    )


def test_values_are_blanked_by_the_quoting_rules_of_the_backend():
    """A literal only one backend quotes so is blanked there: MySQL's "...", PostgreSQL's $$."""
    assert blank_literals('SELECT a FROM b WHERE c = "secret"', "mysql") == (
        "SELECT a FROM b WHERE c = ?"
    )
    assert blank_literals("SELECT a FROM b WHERE c = $$secret$$", "postgresql") == (
        "SELECT a FROM b WHERE c = ?"
    )
    assert blank_literals("SELECT a FROM b WHERE c = E'it\\'s secret'", "postgresql") == (
        "SELECT a FROM b WHERE c = ?"
    )
    assert blank_literals('SELECT "c" FROM b', "sqlite") == 'SELECT "c" FROM b'
