"""Targets: what in_database accepts, how it is normalised, and what it refuses."""

from __future__ import annotations

import decimal
import pathlib
import types
import uuid

import django
import pytest

from dynroute import DatabaseAlias, DatabaseConfiguration, DynrouteError, in_database
from dynroute.core import _settings
from dynroute.core._targets import _Names, to_target
from dynroute.exceptions import ConfigurationError, InvalidTargetError, UsageError

SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/dynroute-target.db"}
SECRET = "s3cr3t-Pa55"


def test_a_string_is_an_alias():
    """A str becomes a DatabaseAlias."""
    assert to_target("replica") == DatabaseAlias("replica")


def test_a_mapping_is_a_configuration():
    """A settings-style dict becomes a DatabaseConfiguration."""
    target = to_target(SQLITE)
    assert isinstance(target, DatabaseConfiguration)
    assert target.settings["NAME"] == SQLITE["NAME"]


def test_targets_pass_through():
    """A DatabaseTarget is returned as it is."""
    alias = DatabaseAlias("replica")
    configuration = DatabaseConfiguration(SQLITE)
    assert to_target(alias) is alias
    assert to_target(configuration) is configuration


@pytest.mark.parametrize("value", [2, 2.5, None, b"default", ["default"], ("default",)])
def test_a_target_of_the_wrong_kind_is_a_value_error_naming_the_accepted_kinds(value):
    """in_database(2) raises ValueError (the old contract), also a DynrouteError."""
    with pytest.raises(ValueError, match="alias") as caught:
        in_database(value)
    assert isinstance(caught.value, DynrouteError)
    assert isinstance(caught.value, InvalidTargetError)
    assert "settings-style dict" in str(caught.value)
    assert type(value).__name__ in str(caught.value)


def test_a_function_as_target_hints_at_the_missing_parentheses():
    """@in_database without arguments says how to write it."""

    def report() -> None: ...

    with pytest.raises(InvalidTargetError, match=r"@in_database\('replica'\)"):
        in_database(report)


@pytest.mark.parametrize("alias", ["", "_storage", "__class__"])
def test_unusable_aliases_are_refused(alias):
    """Empty names and names starting with '_' cannot be aliases."""
    with pytest.raises(InvalidTargetError):
        DatabaseAlias(alias)


def test_a_url_is_refused_without_repeating_it():
    """A database URL passed as an alias is refused, and its password not echoed."""
    url = f"postgres://app:{SECRET}@db.example.com/app"
    with pytest.raises(InvalidTargetError, match="looks like a URL") as caught:
        in_database(url)
    assert SECRET not in str(caught.value)


def test_a_configuration_gets_django_defaults():
    """ENGINE and NAME are enough; Django's defaults are filled in."""
    settings = DatabaseConfiguration(SQLITE).settings
    assert settings["TIME_ZONE"] is None
    assert settings["OPTIONS"] == {}
    assert settings["CONN_MAX_AGE"] == 0
    assert settings["ATOMIC_REQUESTS"] is False
    assert settings["TEST"]["NAME"] is None


def test_any_mapping_is_a_configuration():
    """Settings in a read-only mapping (a MappingProxyType, say) work like a dict."""
    given = types.MappingProxyType({**SQLITE, "OPTIONS": {"timeout": 5}})
    first, second = in_database(given), in_database(given)
    assert first.route.alias == second.route.alias == in_database(dict(given)).route.alias


def test_a_configuration_copies_its_input():
    """Changing the dict afterwards does not change the configuration, and vice versa."""
    given = {**SQLITE, "OPTIONS": {"timeout": 5, "init": ["a", {"b": 1}]}}
    configuration = DatabaseConfiguration(given)
    given["OPTIONS"]["timeout"] = 99
    given["OPTIONS"]["init"][1]["b"] = 2
    assert configuration.settings["OPTIONS"] == {"timeout": 5, "init": ["a", {"b": 1}]}
    assert "TIME_ZONE" not in given


def test_the_same_settings_get_the_same_alias():
    """The alias is stable per configuration and distinct between configurations."""
    first = DatabaseConfiguration(SQLITE)
    assert DatabaseConfiguration(dict(SQLITE)).alias == first.alias
    assert DatabaseConfiguration({**SQLITE, "USER": ""}).alias == first.alias  # a default
    assert DatabaseConfiguration({**SQLITE, "NAME": "/tmp/else.db"}).alias != first.alias
    assert first == DatabaseConfiguration(SQLITE)
    assert hash(first) == hash(DatabaseConfiguration(SQLITE))


def test_equal_settings_dicts_share_one_block():
    """A dict built afresh per request (one per tenant) reuses the first equal one's block."""
    block = in_database(dict(SQLITE))
    assert in_database({**SQLITE}) is block
    assert in_database(dict(SQLITE), write=True) is not block
    assert in_database(dict(SQLITE), write=True) is in_database(dict(SQLITE), write=True)
    assert in_database(dict(SQLITE), read=False) is in_database(dict(SQLITE), read=False)
    assert in_database(dict(SQLITE), alias="tenant_shared") is not block
    with pytest.raises(UsageError, match="read"):
        in_database(dict(SQLITE), read=1)  # equals True, and is still refused


def test_a_changed_dict_gets_a_block_of_its_own():
    """A dict changed after use gets a new block; the old block keeps the old settings."""
    given = {**SQLITE, "OPTIONS": {"timeout": 5}}
    block = in_database(given)
    given["OPTIONS"]["timeout"] = 99
    changed = in_database(given)
    assert changed is not block
    assert changed.route.alias != block.route.alias
    assert settings_of(block)["OPTIONS"] == {"timeout": 5}
    assert settings_of(changed)["OPTIONS"] == {"timeout": 99}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (1, True),
        (1, 1.0),
        (0, None),
        ([1], (1,)),
        ("1", 1),
        ([1], [2]),
        (pathlib.Path("/tmp/a"), pathlib.Path("/tmp/b")),
    ],
)
def test_dicts_equal_only_by_python_equality_get_blocks_of_their_own(first, second):
    """1, 1.0 and True compare equal in Python but are different settings."""
    block = in_database({**SQLITE, "OPTIONS": {"value": first}})
    other = in_database({**SQLITE, "OPTIONS": {"value": second}})
    assert other is not block
    assert settings_of(other)["OPTIONS"] == {"value": second}
    assert type(settings_of(other)["OPTIONS"]["value"]) is type(second)


def test_a_dict_holding_more_than_plain_data_is_built_afresh():
    """Values with an equality of their own are not trusted for reuse: built each time."""

    class Timeout:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    given = {**SQLITE, "OPTIONS": {"timeout": Timeout()}}
    block = in_database(given)
    assert in_database(given) is not block
    assert in_database(given).route.alias == block.route.alias


def test_a_path_as_name_is_reused():
    """``NAME: BASE_DIR / "db.sqlite3"``, as Django's project template writes it."""
    given = {**SQLITE, "NAME": pathlib.Path(SQLITE["NAME"])}
    assert in_database(dict(given)) is in_database(dict(given))


def test_lists_and_tuples_of_plain_data_are_reused():
    """Nested containers of plain data count as plain data: the block is reused."""
    given = {**SQLITE, "OPTIONS": {"init": ["a", ("b", 1)], "x": {"y": [None, 1.5]}}}
    assert in_database(dict(given)) is in_database(dict(given))


def test_a_list_holding_more_than_plain_data_is_built_afresh():
    """Objects inside a list are not trusted for reuse either, and never shared."""

    class Hook:
        def __init__(self, name: str) -> None:
            self.name = name

        def __repr__(self) -> str:
            return f"Hook({self.name!r})"

    first = in_database({**SQLITE, "OPTIONS": {"hooks": [Hook("a")]}})
    second = in_database({**SQLITE, "OPTIONS": {"hooks": [Hook("b")]}})
    assert second is not first
    assert second.route.alias != first.route.alias


def test_the_last_256_blocks_built_from_settings_dicts_are_remembered():
    """Up to 256 blocks are kept for reuse; building one more forgets the oldest only."""
    run = uuid.uuid4().hex  # names no earlier test built a block for
    given = [{**SQLITE, "NAME": f"/tmp/dynroute-{run}-{n}.db"} for n in range(257)]
    blocks = [in_database(dict(settings)) for settings in given[:256]]
    assert all(
        in_database(dict(settings)) is block
        for settings, block in zip(given[:256], blocks, strict=True)
    )
    in_database(given[256])
    assert in_database(dict(given[1])) is blocks[1]
    assert in_database(dict(given[255])) is blocks[255]
    rebuilt = in_database(dict(given[0]))
    assert rebuilt is not blocks[0]
    assert rebuilt.route.alias == blocks[0].route.alias


def settings_of(block) -> dict:
    """The settings of the configuration a block routes to."""
    configuration = block.route.policy.target
    assert isinstance(configuration, DatabaseConfiguration)
    return dict(configuration.settings)


def test_a_configuration_that_contains_itself_is_refused():
    """A dict that holds itself cannot be copied: InvalidTargetError, not RecursionError."""
    options: dict[str, object] = {}
    options["again"] = options
    with pytest.raises(InvalidTargetError, match="contains itself"):
        in_database({**SQLITE, "OPTIONS": options})


def test_aliases_hold_no_secret():
    """Automatic aliases are opaque and do not depend on the password's text."""
    configuration = DatabaseConfiguration({**SQLITE, "PASSWORD": SECRET})
    assert SECRET not in configuration.alias
    assert configuration.alias.startswith("dynroute_")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (1, True),
        (1, 1.0),
        (0, None),
        ([1], (1,)),
        ("1", 1),
        (pathlib.Path("/tmp/a"), "/tmp/a"),
        (pathlib.Path("/tmp/a"), {"path": "/tmp/a"}),
        ({"a": 1}, {"a": "1"}),
        ({1: "x"}, {"1": "x"}),
        ([[1, 2]], [1, 2]),
        ("a\x1fb", ["a", "b"]),
        ([1], [2]),
        (pathlib.Path("/tmp/a"), pathlib.Path("/tmp/b")),
        (decimal.Decimal(1), decimal.Decimal(2)),
    ],
)
def test_different_settings_never_share_an_alias(first, second):
    """Settings that differ only in a value's type still get aliases of their own."""
    one = DatabaseConfiguration({**SQLITE, "OPTIONS": {"value": first}})
    two = DatabaseConfiguration({**SQLITE, "OPTIONS": {"value": second}})
    assert one.alias != two.alias
    assert one != two


def test_the_order_of_keys_does_not_change_the_alias():
    """Dicts with the same items in another order are the same settings, at any depth."""
    forward = {**SQLITE, "OPTIONS": {"timeout": 5, "init": [{"a": 1, "b": 2}]}}
    backward = dict(
        reversed(list({**forward, "OPTIONS": {"init": [{"b": 2, "a": 1}], "timeout": 5}}.items()))
    )
    assert DatabaseConfiguration(forward).alias == DatabaseConfiguration(backward).alias


def test_the_name_registry_binds_each_name_to_one_configuration():
    """Automatic names are numbered from 1 and stable; a claimed name refuses others."""
    names = _Names()
    a, b = names.fingerprint({"NAME": "a"}), names.fingerprint({"NAME": "b"})
    assert (names.auto(a), names.auto(b), names.auto(a)) == (
        "dynroute_1",
        "dynroute_2",
        "dynroute_1",
    )
    assert names.claim("tenant", a) is True
    assert names.claim("tenant", a) is False  # already bound to a: nothing new to release
    with pytest.raises(ConfigurationError, match="'tenant' already names another"):
        names.claim("tenant", b)
    names.release("tenant", b)  # not b's to release
    with pytest.raises(ConfigurationError):
        names.claim("tenant", b)
    names.release("tenant", a)
    assert names.claim("tenant", b) is True
    with pytest.raises(ConfigurationError, match="'dynroute_1' already names another"):
        names.claim("dynroute_1", b)  # an automatic name is taken too


def test_fingerprints_are_keyed_per_process():
    """The same settings hash differently in another registry: nothing to test passwords with."""
    settings = {**SQLITE, "PASSWORD": SECRET}
    assert _Names().fingerprint(settings) != _Names().fingerprint(settings)
    registry = _Names()
    assert registry.fingerprint(settings) == registry.fingerprint(dict(settings))


def test_building_a_configuration_binds_no_name():
    """alias= names the configuration; building one reserves nothing (entering does)."""
    configuration = DatabaseConfiguration(SQLITE, alias="tenant_7")
    assert configuration.alias == "tenant_7"
    assert DatabaseConfiguration(dict(SQLITE), alias="tenant_7") == configuration
    other = DatabaseConfiguration({**SQLITE, "NAME": "/tmp/other.db"}, alias="tenant_7")
    assert other.alias == "tenant_7"
    assert other != configuration


def test_alias_is_only_for_configurations():
    """alias= with an alias target is refused."""
    with pytest.raises(UsageError, match="alias="):
        in_database("default", alias="x")


def test_repr_names_the_database_by_engine_name_host_and_port():
    """The repr shows what identifies the database, in a fixed order, and the alias."""
    configuration = DatabaseConfiguration(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "tenant",
            "HOST": "db.internal",
            "PORT": 5432,
            "USER": "app",
        },
        alias="tenant_9",
    )
    assert repr(configuration) == (
        "DatabaseConfiguration(alias='tenant_9', ENGINE='django.db.backends.postgresql', "
        "NAME='tenant', HOST='db.internal', PORT=5432)"
    )
    assert repr(DatabaseConfiguration(SQLITE, alias="tenant_9")) == (
        "DatabaseConfiguration(alias='tenant_9', ENGINE='django.db.backends.sqlite3', "
        "NAME='/tmp/dynroute-target.db')"
    )


def test_repr_never_shows_the_password_or_options():
    """Repr names the database, never PASSWORD or OPTIONS."""
    configuration = DatabaseConfiguration(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "tenant",
            "HOST": "db.internal",
            "PASSWORD": SECRET,
            "OPTIONS": {"sslpassword": SECRET},
        }
    )
    for text in (repr(configuration), str(configuration), repr(in_database(configuration))):
        assert SECRET not in text
        assert "tenant" in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"NAME": "x"}, "no ENGINE"),
        ({"ENGINE": ""}, "no ENGINE"),
        ({"ENGINE": "django.db.backends.sqlite3", "PASWORD": SECRET}, "'PASWORD'"),
        ({"ENGINE": "django.db.backends.sqlite3", "PORT": [1]}, "PORT"),
        ({"ENGINE": "django.db.backends.sqlite3", "PASSWORD": 12345}, "PASSWORD"),
        ({"ENGINE": "django.db.backends.sqlite3", "OPTIONS": "x"}, "OPTIONS"),
        ({"ENGINE": "django.db.backends.sqlite3", "CONN_MAX_AGE": -1}, "CONN_MAX_AGE"),
        ({"ENGINE": 5}, "ENGINE"),
        ({1: "x", "ENGINE": "django.db.backends.sqlite3"}, "Unknown key"),
    ],
)
def test_malformed_configurations_name_the_key_not_the_value(settings, message):
    """Bad keys and values fail at once; messages never contain the values."""
    with pytest.raises(InvalidTargetError, match=message) as caught:
        DatabaseConfiguration(settings)
    assert SECRET not in str(caught.value)
    assert "12345" not in str(caught.value)


def test_pools_need_django_5_1():
    """Django knows connection pools since 5.1: before, OPTIONS['pool'] is refused."""
    assert _settings.POOLS is (django.VERSION >= (5, 1))


def test_a_pool_with_persistent_connections_is_refused(monkeypatch):
    """OPTIONS['pool'] with a CONN_MAX_AGE other than 0 is refused, as Django refuses it."""
    monkeypatch.setattr(_settings, "POOLS", True)  # as on Django 5.1+
    pooled = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "OPTIONS": {"pool": True}}
    assert DatabaseConfiguration(pooled).settings["CONN_MAX_AGE"] == 0
    for max_age in (60, None):
        with pytest.raises(ConfigurationError, match="CONN_MAX_AGE"):
            DatabaseConfiguration({**pooled, "CONN_MAX_AGE": max_age})


def test_every_key_is_accepted_with_a_value_of_its_type():
    """Each key of settings.DATABASES, with each kind of value it may hold, is accepted."""
    accepted = [
        {"NAME": "x"},
        {"NAME": pathlib.Path("/tmp/x")},
        {"USER": "u", "PASSWORD": "p", "HOST": "h"},
        {"PORT": "5432"},
        {"PORT": 5432},
        {"OPTIONS": {"timeout": 5}},
        {"TIME_ZONE": None},
        {"TIME_ZONE": "UTC"},
        {"CONN_MAX_AGE": 0},
        {"CONN_MAX_AGE": None},
        {"CONN_HEALTH_CHECKS": True},
        {"AUTOCOMMIT": False},
        {"ATOMIC_REQUESTS": False},
        {"DISABLE_SERVER_SIDE_CURSORS": True},
        {"TEST": {"NAME": "t", "MIGRATE": True}},  # Django completes TEST too
    ]
    for extra in accepted:
        settings = DatabaseConfiguration({**SQLITE, **extra}).settings
        assert {key: settings[key] for key in extra} == {
            key: {**settings[key], **value} if key == "TEST" else value
            for key, value in extra.items()
        }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TIME_ZONE", 5),
        ("PORT", True),
        ("CONN_MAX_AGE", True),
        ("CONN_MAX_AGE", 1.5),
        ("AUTOCOMMIT", 1),
        ("NAME", 5),
        ("TEST", "x"),
    ],
)
def test_a_value_of_another_type_is_refused(key, value):
    """Bool is not a number here, and a number is not a bool: the key is named."""
    with pytest.raises(InvalidTargetError, match=f"^{key} in the database configuration"):
        DatabaseConfiguration({**SQLITE, key: value})


@pytest.mark.parametrize(
    ("key", "shown"),
    [("K" * 38, "'" + "K" * 38 + "'"), ("K" * 39, "'" + "K" * 36 + "...")],
)
def test_unknown_keys_are_named_up_to_forty_characters(key, shown):
    """A long unknown key is cut, so that a value pasted as a key cannot fill the message."""
    with pytest.raises(InvalidTargetError) as caught:
        DatabaseConfiguration({**SQLITE, key: 1})
    assert str(caught.value).startswith(f"Unknown key(s) in the database configuration: {shown}. ")


def test_atomic_requests_is_refused():
    """ATOMIC_REQUESTS=True would wrap every request of the process: refused."""
    with pytest.raises(ConfigurationError, match="ATOMIC_REQUESTS"):
        DatabaseConfiguration({**SQLITE, "ATOMIC_REQUESTS": True})


def test_a_path_is_a_valid_name():
    """NAME may be a pathlib.Path, as Django allows for SQLite."""
    configuration = DatabaseConfiguration({**SQLITE, "NAME": pathlib.Path("/tmp/p.db")})
    assert configuration.settings["NAME"] == pathlib.Path("/tmp/p.db")
