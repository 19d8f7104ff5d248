"""Targets: what in_database accepts, how it is normalised, and what it refuses."""

from __future__ import annotations

import pathlib

import pytest

from dynroute import DatabaseAlias, DatabaseConfiguration, DynrouteError, in_database
from dynroute._targets import to_target
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


def test_a_configuration_copies_its_input():
    """Changing the dict afterwards does not change the configuration, and vice versa."""
    given = {**SQLITE, "OPTIONS": {"timeout": 5}}
    configuration = DatabaseConfiguration(given)
    given["OPTIONS"]["timeout"] = 99
    assert configuration.settings["OPTIONS"]["timeout"] == 5
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
    [(1, True), (1, 1.0), (0, None), ([1], (1,)), ("1", 1)],
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


def test_atomic_requests_is_refused():
    """ATOMIC_REQUESTS=True would wrap every request of the process: refused."""
    with pytest.raises(ConfigurationError, match="ATOMIC_REQUESTS"):
        DatabaseConfiguration({**SQLITE, "ATOMIC_REQUESTS": True})


def test_a_path_is_a_valid_name():
    """NAME may be a pathlib.Path, as Django allows for SQLite."""
    configuration = DatabaseConfiguration({**SQLITE, "NAME": pathlib.Path("/tmp/p.db")})
    assert configuration.settings["NAME"] == pathlib.Path("/tmp/p.db")
