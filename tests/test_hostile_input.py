"""Hostile input: arbitrary targets, flags, aliases, policies and settings dicts.

Only documented exceptions (DynrouteError and its families, or a policy's own
exception reaching the query that asked it) may come out; no alias or route may be
left behind; no message may show the password. Server engines are pointed at the
local server (real port or a closed one) and SQLite files at a temporary folder, so
that no example waits on DNS or writes outside it.
"""

from __future__ import annotations

import string

import pytest
from django.db import connections, router
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynroute import DatabaseConfiguration, DynrouteError, close_idle_connections, in_database
from dynroute.core._stack import CURRENT
from dynroute.runtime import active_aliases
from dynroute.typing import DatabaseSettings
from tests import figures
from tests.runtime import BACKEND, SERVER
from tests.testapp.models import Author, Item

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

SECRET = "hostile-Pa55-9f8e7d"
KNOWN_KEYS = sorted(DatabaseSettings.__annotations__)
ENGINES = [
    "django.db.backends.sqlite3",
    SERVER.get("ENGINE", "django.db.backends.sqlite3"),
    "django.db.backends.dummy",
    "django.db.backends.nosuchdb",
    "os",
    ".",
    "a..b",
]
HYPOTHESIS = settings(
    figures.HYPOTHESIS,
    max_examples=figures.HOSTILE_EXAMPLES,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(min_size=500, max_size=2000),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=6,
)
options = st.dictionaries(
    st.one_of(
        st.sampled_from(["sslpassword", "passfile", "timeout", "connect_timeout"]),
        st.text(max_size=12),
    ),
    values,
    max_size=3,
)


TYPED = {
    "NAME": st.text(max_size=40),
    "USER": st.text(max_size=20),
    "HOST": st.just("127.0.0.1"),
    "PORT": st.sampled_from(["1", 1, "5432", "3306", "0", 99999]),
    "OPTIONS": options,
    "TIME_ZONE": st.one_of(st.none(), st.sampled_from(["UTC", "Europe/Paris", "Nowhere/City"])),
    "CONN_MAX_AGE": st.one_of(st.just(0), st.integers(0, 600), st.none()),
    "CONN_HEALTH_CHECKS": st.booleans(),
    "AUTOCOMMIT": st.booleans(),
    "ATOMIC_REQUESTS": st.booleans(),
    "DISABLE_SERVER_SIDE_CURSORS": st.booleans(),
    "TEST": st.dictionaries(st.sampled_from(["NAME", "MIRROR", "CHARSET"]), values, max_size=2),
}


#: Values a working configuration may have (OPTIONS the drivers accept, and so on).
PLAUSIBLE = {
    **TYPED,
    "PORT": st.sampled_from([SERVER.get("PORT", "1"), "1"]),
    "OPTIONS": st.one_of(
        st.just({}),
        st.fixed_dictionaries(
            {"timeout" if BACKEND == "sqlite" else "connect_timeout": st.integers(1, 5)}
        ),
    ),
    "TIME_ZONE": st.one_of(st.none(), st.just("UTC")),
    "ATOMIC_REQUESTS": st.just(value=False),
}


@st.composite
def configurations(draw, folder, *, plausible=False):
    """A settings dict: mostly plausible, sometimes of the wrong type, rarely unknown keys.

    ``plausible``: a working ENGINE and well-typed values nine times in ten, so that
    most dicts get past validation and a block is entered on them.
    """
    config: dict[object, object] = {}
    odds, typed = (9, PLAUSIBLE) if plausible else (3, TYPED)
    if draw(st.integers(0, 9)):
        engines = st.sampled_from(ENGINES[:2] if plausible else ENGINES)
        config["ENGINE"] = draw(engines if draw(st.integers(0, 4)) else values)
    for key in draw(st.lists(st.sampled_from(sorted(TYPED)), max_size=5, unique=True)):
        config[key] = draw(typed[key] if draw(st.integers(0, odds)) else values)
    if draw(st.booleans()):
        config["PASSWORD"] = SECRET
    if not draw(st.integers(0, 9)):
        config[draw(st.text(max_size=12))] = draw(values)
    engine = config.get("ENGINE")
    if engine == "django.db.backends.sqlite3" or engine not in ENGINES:
        # Keep SQLite files in the temporary folder, odd characters and all.
        name = config.get("NAME")
        safe = name.replace("/", "_")[:60] if isinstance(name, str) else "x"
        config["NAME"] = str(folder / f"db-{safe}")
    elif engine == SERVER.get("ENGINE"):
        # Never wait on DNS; a bad port fails at once.
        config["HOST"] = "127.0.0.1"
        if config.get("PORT") not in (SERVER.get("PORT"), "1"):
            config["PORT"] = "1"
        pool_free = config.get("OPTIONS")
        if isinstance(pool_free, dict):
            pool_free.pop("pool", None)
    return config


def targets(folder):
    """Anything at all as a target; settings dicts most of the time."""
    return st.one_of(
        configurations(folder),
        st.sampled_from(
            ["default", "other", "missing", "_storage", "", f"postgres://u:{SECRET}@h/db"]
        ),
        st.text(max_size=30),
        scalars,
        st.lists(scalars, max_size=2),
        st.builds(object),
    )


flags = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-1, 2),
    st.text(max_size=3),
    st.floats(),
    st.lists(st.booleans(), max_size=1),  # unhashable
)
aliases = st.one_of(
    st.none(),
    st.text(alphabet=string.ascii_lowercase + "_", max_size=8).map("hostile_{}".format),
    st.sampled_from(["other", "default", "_storage", ""]),
    st.integers(),
)  # prefixed: a name bound here must not be one another test uses


def refused(error: BaseException) -> None:
    """A documented refusal: check that it shows no secret."""
    figures.record("hostile_refused")
    shown = f"{error}{error!r}"
    if SECRET in shown:
        figures.record("hostile_secrets")
    assert SECRET not in shown


def kept_for_reuse(block) -> set[str]:
    """The alias a block leaves registered on purpose: reuse mode, after a good block."""
    target = getattr(block.route.policy, "target", None)
    if not isinstance(target, DatabaseConfiguration):
        return set()
    options = target.settings["OPTIONS"]
    reuse = target.settings["CONN_MAX_AGE"] != 0 and not options.get("pool")
    return {target.alias} if reuse else set()


def nothing_left(before: set[str], kept: set[str]) -> None:
    """No route active, no alias registered beyond ``before`` but the ``kept`` idle ones.

    Checked before idle connections are closed: a failed block must leave nothing,
    reuse mode or not.
    """
    registered = set(connections.settings)
    leaked = CURRENT.get() is not None or bool(registered - before - kept)
    leaked = leaked or bool(set(active_aliases()) - kept - before)
    close_idle_connections()
    leaked = leaked or set(connections.settings) != before or bool(active_aliases())
    if leaked:
        figures.record("hostile_leaks")
    assert not leaked


def test_hostile_targets_flags_and_aliases(tmp_path):
    """Only documented errors, nothing left registered, no password shown."""
    for name in ("hostile_leaks", "hostile_secrets"):
        figures.record(name, 0)  # shown as 0 in the figures, not left out

    @HYPOTHESIS
    @given(data=st.data())
    def attempt(data):
        figures.record("hostile_inputs")
        target = data.draw(targets(tmp_path), label="target")
        kwargs = {}
        for name, strategy in (("read", flags), ("write", flags), ("alias", aliases)):
            if data.draw(st.booleans()):
                kwargs[name] = data.draw(strategy, label=name)
        enter_hostile_block(target, kwargs)

    attempt()


def enter_hostile_block(target: object, kwargs: dict[str, object]) -> None:
    """Build and enter a block: a documented refusal, or a block that routes and leaves."""
    before = set(connections.settings)
    kept: set[str] = set()
    try:
        try:
            block = in_database(target, **kwargs)
        except DynrouteError as error:
            refused(error)
            return
        figures.record("hostile_built")
        with block:
            for model in (Item, Author):
                router.db_for_read(model)
                router.db_for_write(model)
        figures.record("hostile_entered")
        kept = kept_for_reuse(block)
    except DynrouteError as error:
        refused(error)
    finally:
        nothing_left(before, kept)


def test_hostile_settings_dicts(tmp_path):
    """Settings dicts with valid flags: most reach entry, the rest a documented refusal."""

    @HYPOTHESIS
    @given(data=st.data())
    def attempt(data):
        figures.record("hostile_inputs")
        figures.record("hostile_dicts")
        target = data.draw(configurations(tmp_path, plausible=True), label="settings")
        kwargs = {}
        for name in ("read", "write"):
            if data.draw(st.booleans()):
                kwargs[name] = data.draw(st.booleans(), label=name)
        if data.draw(st.booleans()):
            kwargs["alias"] = data.draw(
                st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6).map(
                    "hostile_dict_{}".format
                ),
                label="alias",
            )
        enter_hostile_block(target, kwargs)

    attempt()


class DeliberatePolicyError(Exception):
    """What a hostile policy raises: it must reach the caller unchanged."""


@st.composite
def policies(draw):
    """Objects of every shape as policy=, answering anything or raising."""
    answers = st.one_of(
        st.none(),
        st.sampled_from(["default", "other"]),
        st.integers(),
        st.builds(object),
        st.text(max_size=5),
        st.just(""),
    )
    kind = draw(
        st.sampled_from(["answers", "raises", "missing", "not-callable", "class", "scalar"])
    )
    if kind == "scalar":
        return draw(scalars)
    read, write = draw(answers), draw(answers)

    class Hostile:
        def db_for_read(self, model, /, **hints):
            if kind == "raises":
                raise DeliberatePolicyError
            return read

        def db_for_write(self, model, /, **hints):
            return write

    if kind == "missing":
        del Hostile.db_for_write
    if kind == "not-callable":
        Hostile.db_for_read = "other"
    return Hostile if kind == "class" else Hostile()


def test_hostile_policies():
    """A policy of any shape is refused, or routes, or fails with its own or our error."""

    @HYPOTHESIS
    @given(policy=policies())
    def attempt(policy):
        figures.record("hostile_inputs")
        before = set(connections.settings)
        try:
            try:
                block = in_database(policy=policy)
            except DynrouteError as error:
                refused(error)
                return
            with block:
                for model in (Item, Author):
                    for decide in (router.db_for_read, router.db_for_write):
                        try:
                            chosen = decide(model)
                        except DynrouteError as error:  # noqa: PERF203 - each decision is a separate trial
                            refused(error)
                        except DeliberatePolicyError:
                            pass
                        else:
                            assert isinstance(chosen, str)
        finally:
            nothing_left(before, set())

    attempt()
