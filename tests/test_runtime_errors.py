"""Runtime configurations that fail: clear errors, nothing registered, no secret shown.

The password below must never appear in a message, a repr, a log line, or the frame
locals of Django's technical 500 page (rendered here with DEBUG=True, where Django
filters nothing).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

import pytest
from django.db import OperationalError, connections
from django.views.debug import ExceptionReporter

from dynroute import DynrouteError, in_database
from dynroute.exceptions import DatabaseConnectionError, InvalidTargetError, UsageError
from dynroute.runtime import active_aliases
from tests.runtime import BACKEND, SERVER

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [
    pytest.mark.django_db(databases=["default", "other"]),
    pytest.mark.usefixtures("dynroute_runtime_databases"),
]

SECRET = "pw-7f3a9c1e-Do-Not-Leak"


def unreachable() -> dict[str, object]:
    """A configuration whose database cannot be reached."""
    if BACKEND == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": "/nonexistent-dynroute-dir/x.sqlite3",
            "PASSWORD": SECRET,
        }
    return {
        "ENGINE": SERVER["ENGINE"],
        "NAME": "dynroute_nowhere",
        "HOST": "127.0.0.1",
        "PORT": "1",
        "USER": "dynroute",
        "PASSWORD": SECRET,
        "OPTIONS": {"connect_timeout": 2},
    }


def refused_login() -> dict[str, object]:
    """A configuration whose server refuses the login."""
    return {
        "ENGINE": SERVER["ENGINE"],
        "NAME": "dynroute_nowhere",
        "HOST": SERVER["HOST"],
        "PORT": SERVER["PORT"],
        "USER": "dynroute_no_such_user",
        "PASSWORD": SECRET,
    }


def failing_configurations() -> list[object]:
    """The failures this backend can show."""
    cases: list[object] = [pytest.param(unreachable, id="server-down")]
    if BACKEND != "sqlite":  # SQLite has no logins to refuse
        cases.append(pytest.param(refused_login, id="login-refused"))
    return cases


def enter(block) -> None:
    """Enter and leave a block, with no local holding its settings."""
    with block:
        pytest.fail("the body must not run")


def rendered_500(error: BaseException) -> str:
    """Django's technical 500 page (HTML and text) for ``error``."""
    reporter = ExceptionReporter(None, type(error), error, without_mutmut(error.__traceback__))
    return reporter.get_traceback_html() + reporter.get_traceback_text()


def without_mutmut(traceback: TracebackType | None) -> TracebackType | None:
    """``traceback`` without the frames of mutmut's trampolines.

    Under ``nox -s mutation`` every function is called through a trampoline whose
    frame holds the call's arguments; those frames do not exist outside mutmut.
    """
    frames = []
    while traceback is not None:
        if "mutmut" not in traceback.tb_frame.f_code.co_filename:
            frames.append(traceback)
        traceback = traceback.tb_next
    rebuilt = None
    for frame in reversed(frames):
        rebuilt = TracebackType(rebuilt, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return rebuilt


@pytest.mark.parametrize("reuse", [False, True], ids=["teardown", "reuse"])
@pytest.mark.parametrize("configuration", failing_configurations())
def test_an_unreachable_database_fails_at_entry_naming_the_alias(configuration, reuse):
    """Django's OperationalError, naming the alias, raised on entry; nothing registered.

    In reuse mode too (CONN_MAX_AGE): a configuration that never connected is not kept.
    """
    before = dict(connections.databases)
    block = in_database({**configuration(), "CONN_MAX_AGE": 60 if reuse else 0})
    with pytest.raises(OperationalError) as caught:
        enter(block)
    assert isinstance(caught.value, DatabaseConnectionError)
    assert isinstance(caught.value, DynrouteError)
    assert repr(block.route.alias) in str(caught.value)
    assert connections.databases == before
    assert not active_aliases()


@pytest.mark.parametrize("configuration", failing_configurations())
def test_connection_errors_never_show_the_password(configuration, settings, caplog):
    """Not in str, repr, args, logs, nor any frame of the technical 500 page."""
    settings.DEBUG = True
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as caught:
        enter(in_database(configuration(), write=True))
    error = caught.value
    shown = [str(error), repr(error), repr(error.args), caplog.text, rendered_500(error)]
    assert all(SECRET not in text for text in shown)
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize(
    ("extra", "flags", "expected"),
    [
        ({"PORT": [5]}, {}, InvalidTargetError),
        ({"NAME": "/tmp/dynroute-500.db"}, {"read": "yes"}, UsageError),
    ],
    ids=["a bad value", "a bad flag"],
)
def test_a_refused_configuration_never_shows_the_password(settings, extra, flags, expected):
    """A bad value or flag fails at once, and the 500 page's frames hold no settings."""
    settings.DEBUG = True
    with pytest.raises(expected) as caught:
        in_database({"ENGINE": "django.db.backends.sqlite3", "PASSWORD": SECRET, **extra}, **flags)
    page = rendered_500(caught.value)
    assert SECRET not in page
    assert "in_database" in page  # the frame is there, without the dict


def test_reprs_of_blocks_routes_and_targets_hide_the_password(tmp_path: Path):
    """Everything dynroute prints about a configuration leaves the password out."""
    configuration = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(tmp_path / "r.sqlite3"),
        "PASSWORD": SECRET,
        "OPTIONS": {"timeout": 3},
    }
    block = in_database(configuration, write=True)
    shown = [repr(block), repr(block.route), str(block.route.policy), repr(block.route.policy)]
    with block as route:
        shown.append(repr(route))
        shown.append(repr(connections[route.alias]))
    assert all(SECRET not in text for text in shown)


@pytest.mark.parametrize(
    "where",
    [
        "PASSWORD",
        "sslpassword",  # libpq's key file passphrase
        "passwd",  # mysqlclient
        "password",
        "client_secret",
        "api_token",
        "sslkey",
        "SSLPassword",
    ],
)
def test_a_secret_in_the_drivers_message_is_scrubbed(monkeypatch, where):
    """If a driver echoes the password or a password-like OPTIONS value, stars show instead."""
    from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: PLC0415

    def echoing_connect(self):
        options = self.settings_dict["OPTIONS"]
        values = [self.settings_dict["PASSWORD"] or options[where], *options.values()]
        msg = f"could not log in with {values[0]} ({', '.join(map(str, values[1:]))})"
        raise OperationalError(msg)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", echoing_connect)
    configuration = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    # What is not secret stays readable: a number, and a string under another key.
    visible = {"timeout": 4242, "application_name": "visible-name"}
    if where == "PASSWORD":
        configuration["PASSWORD"] = SECRET
        configuration["OPTIONS"] = visible
        shown = "4242, visible-name"
    else:
        configuration["OPTIONS"] = {where: SECRET, **visible}
        shown = "********, 4242, visible-name"
    with pytest.raises(DatabaseConnectionError) as caught:
        enter(in_database(configuration))
    assert str(caught.value).endswith(f"could not log in with ******** ({shown})")
