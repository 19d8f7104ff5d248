"""What each error says: the exact text users read, naming the bad value and the fix.

Messages are part of the interface: a user who misspells an alias or passes a class
as a policy reads them to know what to do. Each one is checked word for word here,
so that a change to one is a decision, seen in review. None may show a secret.
"""

from __future__ import annotations

import functools
import logging
import re

import django
import pytest
from django.db import router
from django.test.utils import override_settings

from dynroute import (
    DatabaseConfiguration,
    DynamicDbRouter,
    ReadOnly,
    in_database,
    prevent_writes,
)
from dynroute.core import _settings, check_alias
from dynroute.exceptions import (
    ConfigurationError,
    DatabaseConnectionError,
    InvalidTargetError,
    RouteStateError,
    UnknownDatabaseError,
    UsageError,
)
from tests import settings as test_settings
from tests.testapp.models import Item

#: The configured aliases, as messages list them.
CONFIGURED = ", ".join(repr(alias) for alias in test_settings.DATABASES)

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/dynroute-messages.db"}


def rows():
    """A generator function, which in_database refuses to decorate."""
    yield 1


class HalfAPolicy:
    """Has db_for_read only."""

    def db_for_read(self, model, /, **hints):
        return None


class AnswersANumber:
    """A policy whose read answer is not an alias."""

    def db_for_read(self, model, /, **hints):
        return 42

    def db_for_write(self, model, /, **hints):
        return None


def enter(block) -> None:
    """Enter and leave ``block``."""
    with block:
        pass


def route_a_read_through(policy) -> None:
    """Ask the router for a read inside a block on ``policy``."""
    with in_database(policy=policy):
        router.db_for_read(Item)


def recursive_options() -> dict[str, object]:
    """A settings dict whose OPTIONS contains itself."""
    options: dict[str, object] = {}
    options["again"] = options
    return {**SQLITE, "OPTIONS": options}


GENERATOR_ADVICE = (
    ": the route would stay active in the code consuming it between yields. Use "
    "'with in_database(...):' inside it around the queries only, and yield outside that "
    "block (for example, collect the rows into a list first)."
)
POLICY_METHODS = "in_database(policy=...) needs an object with db_for_read() and db_for_write(); "
KNOWN_KEYS = (
    "Known keys are those of settings.DATABASES: ATOMIC_REQUESTS, AUTOCOMMIT, "
    "CONN_HEALTH_CHECKS, CONN_MAX_AGE, DISABLE_SERVER_SIDE_CURSORS, ENGINE, HOST, NAME, "
    "OPTIONS, PASSWORD, PORT, TEST, TIME_ZONE, USER."
)
TARGET_KINDS = (
    "A database target must be an alias from settings.DATABASES (str), a settings-style "
    "dict, or a DatabaseAlias/DatabaseConfiguration; got "
)

CASES = [
    pytest.param(
        lambda: in_database("other")(3),
        UsageError,
        "in_database() decorates functions, not int objects.",
        id="decorating a number",
    ),
    pytest.param(
        lambda: in_database("other")(Item),
        UsageError,
        "in_database() decorates functions, not classes (Item): decorate its methods, "
        "or enter the block where the class is used.",
        id="decorating a class",
    ),
    pytest.param(
        lambda: in_database("other")(rows),
        UsageError,
        "in_database() cannot decorate the generator function rows" + GENERATOR_ADVICE,
        id="decorating a generator function",
    ),
    pytest.param(
        lambda: in_database("other")(functools.partial(rows)),
        UsageError,
        f"in_database() cannot decorate the generator function functools.partial({rows!r})"
        + GENERATOR_ADVICE,
        id="decorating a partial of a generator function (no __qualname__)",
    ),
    pytest.param(
        lambda: in_database(policy=DynamicDbRouter()),
        UsageError,
        "in_database(policy=...) cannot take dynroute's own router: it answers from the "
        "blocks, so as a block's policy it would ask itself. Pass the policy of the "
        "routing you want, as ReadWrite('replica') or a router of your own.",
        id="dynroute's router as a policy",
    ),
    pytest.param(
        lambda: prevent_writes()(3),
        UsageError,
        "prevent_writes() decorates functions, not int objects.",
        id="prevent_writes decorating a number",
    ),
    pytest.param(
        lambda: prevent_writes()(Item),
        UsageError,
        "prevent_writes() decorates functions, not classes (Item): decorate its methods, "
        "or enter the block where the class is used.",
        id="prevent_writes decorating a class",
    ),
    pytest.param(
        lambda: prevent_writes()(rows),
        UsageError,
        "prevent_writes() cannot decorate the generator function rows: the write "
        "prevention would stay active in the code consuming it between yields. Use "
        "'with prevent_writes(...):' inside it around the queries only, and yield outside "
        "that block (for example, collect the rows into a list first).",
        id="prevent_writes decorating a generator function",
    ),
    pytest.param(
        lambda: enter(in_database("othre")),
        UnknownDatabaseError,
        f"The database alias 'othre' is not in settings.DATABASES (configured: {CONFIGURED}). "
        "Add it to DATABASES, or pass in_database() a settings dict to use a database that "
        "is not configured.",
        id="an alias that is not configured",
    ),
    pytest.param(
        in_database,
        UsageError,
        "in_database() needs a target (an alias or a settings dict) or a policy=.",
        id="neither a target nor a policy",
    ),
    pytest.param(
        lambda: in_database("other", policy=ReadOnly("other")),
        UsageError,
        "in_database() takes a target or a policy=, not both: a policy names its own "
        "targets. Pass policy=ReadWrite(target) (or another strategy) alone.",
        id="both a target and a policy",
    ),
    *(
        pytest.param(
            lambda given=given: in_database(policy=ReadOnly("other"), **given),
            UsageError,
            "read=, write= and alias= go with a target, not with policy=: the policy "
            "decides both directions.",
            id=f"{next(iter(given))}= with a policy",
        )
        for given in ({"read": True}, {"write": False}, {"alias": "x"})
    ),
    *(
        pytest.param(
            lambda flag=flag: in_database("other", **{flag: "yes"}),
            UsageError,
            f"in_database({flag}=...) must be True or False, got str.",
            id=f"{flag}= that is not a bool",
        )
        for flag in ("read", "write")
    ),
    pytest.param(
        lambda: in_database(policy=ReadOnly),
        UsageError,
        "in_database(policy=...) needs a policy object, not the class ReadOnly: "
        "instantiate it, as in policy=ReadOnly('replica').",
        id="a policy class instead of an instance",
    ),
    pytest.param(
        lambda: in_database(policy=object()),
        UsageError,
        POLICY_METHODS + "object has no db_for_read() or db_for_write(). Use "
        "ReadOnly/ReadWrite/WriteOnly(target), or any class with both methods.",
        id="a policy without either method",
    ),
    pytest.param(
        lambda: in_database(policy=HalfAPolicy()),
        UsageError,
        POLICY_METHODS + "HalfAPolicy has no db_for_write(). Use "
        "ReadOnly/ReadWrite/WriteOnly(target), or any class with both methods.",
        id="a policy without db_for_write",
    ),
    pytest.param(
        lambda: route_a_read_through(AnswersANumber()),
        UsageError,
        "AnswersANumber.db_for_read() returned a value of type int; a routing policy "
        "returns a database alias (str), or None for no opinion.",
        id="a policy answering something other than an alias",
    ),
    pytest.param(
        lambda: in_database(2.5),
        InvalidTargetError,
        TARGET_KINDS + "float.",
        id="a target of the wrong kind",
    ),
    pytest.param(
        lambda: in_database(len),
        InvalidTargetError,
        TARGET_KINDS + "builtin_function_or_method. It was given a callable: to decorate "
        "a function, name the database first, as in @in_database('replica'), not "
        "@in_database.",
        id="a function as the target",
    ),
    pytest.param(
        lambda: in_database("default", alias="x"),
        UsageError,
        "alias='x' names a runtime configuration; it can only be given with a settings "
        "dict, not with DatabaseAlias(alias='default').",
        id="alias= with an alias target",
    ),
    pytest.param(
        lambda: check_alias(3),
        InvalidTargetError,
        "A database alias must be a str, got int.",
        id="an alias that is not a str",
    ),
    pytest.param(
        lambda: in_database(""),
        InvalidTargetError,
        "A database alias must not be empty.",
        id="an empty alias",
    ),
    pytest.param(
        lambda: in_database("postgres://app:s3cr3t@db/app"),
        InvalidTargetError,
        "The database alias looks like a URL (not shown: it may hold a password). "
        "in_database() takes an alias from settings.DATABASES or a settings dict; turn a "
        "URL into a dict first, for example with dj_database_url.parse().",
        id="a URL as the alias",
    ),
    pytest.param(
        lambda: in_database(SQLITE, alias="_storage"),
        InvalidTargetError,
        "The database alias '_storage' starts with '_': Django's connection handler "
        "resolves such names to its own attributes. Choose a name without a leading "
        "underscore.",
        id="an alias starting with an underscore",
    ),
    pytest.param(
        lambda: DatabaseConfiguration(3),
        InvalidTargetError,
        "A database configuration must be a mapping, got int.",
        id="a configuration that is not a mapping",
    ),
    pytest.param(
        lambda: in_database({**SQLITE, "PASWORD": "s3cr3t", "X" * 50: 1}),
        InvalidTargetError,
        f"Unknown key(s) in the database configuration: 'PASWORD', '{'X' * 36}.... " + KNOWN_KEYS,
        id="unknown keys, one of them long",
    ),
    pytest.param(
        lambda: in_database({"NAME": "x"}),
        InvalidTargetError,
        "The database configuration has no ENGINE. Give the backend's dotted path, for "
        "example {'ENGINE': 'django.db.backends.postgresql', 'NAME': ...}.",
        id="no ENGINE",
    ),
    pytest.param(
        lambda: in_database({**SQLITE, "PORT": [5432]}),
        InvalidTargetError,
        "PORT in the database configuration must be a str or an int, got a value of type list.",
        id="a value of the wrong type",
    ),
    pytest.param(
        lambda: in_database({**SQLITE, "ATOMIC_REQUESTS": True}),
        ConfigurationError,
        "ATOMIC_REQUESTS=True is refused for a runtime database configuration: Django "
        "would wrap every request of the process in a transaction on it. Use "
        "transaction.atomic(using=route.alias) inside the block instead.",
        id="ATOMIC_REQUESTS",
    ),
    pytest.param(
        lambda: in_database(recursive_options()),
        InvalidTargetError,
        "The database configuration contains itself (a dict or list holding itself, at "
        "some depth) or is nested too deeply to copy; settings are plain data.",
        id="a configuration containing itself",
    ),
    pytest.param(
        lambda: enter(in_database(SQLITE, alias="other")),
        ConfigurationError,
        "The alias 'other' of a runtime database configuration is already in "
        "settings.DATABASES. Choose another alias= for the configuration.",
        id="a configuration under a configured alias",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), CASES)
def test_each_error_says_what_is_wrong_and_what_to_do(call, error, message):
    """The documented class, and the message word for word."""
    with pytest.raises(error) as caught:
        call()
    assert str(caught.value) == message


def test_leaving_a_block_that_is_not_active():
    """RouteStateError names the block (policy and target) and the rule."""
    block = in_database("other")
    with pytest.raises(RouteStateError) as caught:
        block.__exit__(None, None, None)
    assert str(caught.value) == (
        "in_database(policy=ReadOnly(target=DatabaseAlias(alias='other'))) was left "
        "without being active here: a block must be left in the thread or task that "
        "entered it, once per entry, innermost first."
    )


@pytest.mark.parametrize("pools", [True, False], ids=["Django 5.1+", "Django 4.2"])
def test_a_pool_django_cannot_provide(monkeypatch, pools):
    """With persistent connections: the setting to drop; before Django 5.1: the upgrade."""
    monkeypatch.setattr(_settings, "POOLS", pools)
    with pytest.raises(ConfigurationError) as caught:
        in_database({**SQLITE, "OPTIONS": {"pool": True}, "CONN_MAX_AGE": 5})
    if pools:
        expected = (
            "OPTIONS['pool'] cannot be combined with a CONN_MAX_AGE other than 0 (Django "
            "refuses persistent connections on a pool); leave CONN_MAX_AGE out."
        )
    else:
        expected = (
            f"OPTIONS['pool'] needs Django 5.1 or later (this is Django "
            f"{django.get_version()}); remove it or upgrade Django."
        )
    assert str(caught.value) == expected


def test_an_alias_already_naming_other_settings(fresh_alias, tmp_path):
    """Refused at entry, with why names are never reused and what to do."""
    name = fresh_alias("tenant")
    enter(in_database({**SQLITE, "NAME": str(tmp_path / "a.db")}, alias=name))  # connects
    with pytest.raises(ConfigurationError) as caught:
        enter(in_database({**SQLITE, "NAME": str(tmp_path / "b.db")}, alias=name))
    assert str(caught.value) == (
        f"The alias '{name}' already names another database configuration in this "
        "process. A name is never reused for a different configuration (threads may "
        "still hold connections under it): choose a new alias, for example with a "
        "version suffix, or leave alias= out."
    )


def test_a_bad_idle_bound():
    """Names the setting, the rule, the default and the value found."""
    with (
        override_settings(DYNROUTE_MAX_IDLE_CONNECTIONS="16"),
        pytest.raises(ConfigurationError) as caught,
    ):
        enter(in_database({**SQLITE, "CONN_MAX_AGE": 60}))
    assert str(caught.value) == (
        "DYNROUTE_MAX_IDLE_CONNECTIONS must be a whole number of connections, 0 or more "
        "(default 128); it is '16'."
    )


@pytest.mark.parametrize("length", [27, 80, 81])
def test_an_engine_that_cannot_be_loaded(fresh_alias, length):
    """Names the ENGINE (up to 80 characters), the alias, and the import error."""
    name = fresh_alias("engine")
    engine = ("django.db.backends.nosuchdb" + "x" * 60)[:length]
    shown = engine if length <= 80 else engine[:77] + "..."
    with pytest.raises(ConfigurationError) as caught:
        enter(in_database({**SQLITE, "ENGINE": engine}, alias=name))
    assert str(caught.value).startswith(
        f"Cannot load ENGINE '{shown}' of runtime database '{name}': ImproperlyConfigured: "
    )


def test_an_engine_whose_import_fails_is_quoted_up_to_500_characters(fresh_alias):
    """The import error's own text is shown, cut at 500 characters."""
    name = fresh_alias("engine")
    reason = "this backend cannot start: " + "the reason goes on " * 40
    with pytest.raises(ConfigurationError) as caught:
        enter(in_database({**SQLITE, "ENGINE": "tests.broken_backend"}, alias=name))
    assert str(caught.value) == (
        f"Cannot load ENGINE 'tests.broken_backend' of runtime database '{name}': "
        f"RuntimeError: {reason[:500]}"
    )


def test_a_database_that_cannot_be_reached(fresh_alias):
    """Names the alias, NAME, HOST and PORT, and the driver's reason without secrets."""
    name = fresh_alias("down")
    settings = {
        **SQLITE,
        "NAME": "/nonexistent-dynroute/x.db",
        "HOST": "h",
        "PORT": 1,
        "PASSWORD": "s3cr3t",
    }
    with pytest.raises(DatabaseConnectionError) as caught:
        enter(in_database(settings, alias=name))
    assert re.fullmatch(
        f"Could not connect to the runtime database '{name}' \\(NAME "
        "'/nonexistent-dynroute/x.db', HOST 'h', PORT '1'\\): OperationalError: .+",
        str(caught.value),
    )


def test_a_long_name_and_a_long_reason_are_cut(fresh_alias, monkeypatch):
    """NAME, HOST and PORT are cut at 80 characters, the driver's reason at 500."""
    from django.db import OperationalError  # noqa: PLC0415
    from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: PLC0415

    def verbose_refusal(self):
        raise OperationalError("r" * 600)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", verbose_refusal)
    name = fresh_alias("long")
    with pytest.raises(DatabaseConnectionError) as caught:
        enter(in_database({**SQLITE, "NAME": "/" + "n" * 99}, alias=name))
    assert str(caught.value) == (
        f"Could not connect to the runtime database '{name}' (NAME '/{'n' * 79}'): "
        f"OperationalError: {'r' * 500}"
    )


def test_settings_the_driver_refuses(fresh_alias):
    """A driver refusing an OPTIONS key: ConfigurationError naming the alias and reason."""
    name = fresh_alias("refused")
    with pytest.raises(ConfigurationError) as caught:
        enter(in_database({**SQLITE, "OPTIONS": {"no_such_option": 1}}, alias=name))
    assert re.fullmatch(
        f"The driver refused the settings of the runtime database '{name}' \\(NAME "
        "'/tmp/dynroute-messages.db'\\): TypeError: .*'no_such_option'.*",
        str(caught.value),
    )


def test_the_warning_for_blocks_dropped_by_an_enclosing_exit(caplog):
    """One WARNING in the dynroute logger, naming the enclosing block and the count."""
    outer, inner = in_database("other"), in_database("default")
    with caplog.at_level(logging.WARNING, logger="dynroute"):
        outer.__enter__()
        inner.__enter__()
        inner.__enter__()
        outer.__exit__(None, None, None)
    assert [record.getMessage() for record in caplog.records] == [
        (
            "in_database(policy=ReadOnly(target=DatabaseAlias(alias='other'))) was left while "
            "2 block(s) entered inside it were still active (a generator suspended inside a "
            "block, or a block never left): they were dropped with it"
        )
    ]
