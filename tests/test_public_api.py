"""The public surface: what is exported, from where, and the exception families."""

from __future__ import annotations

import importlib.resources
import inspect
import types

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils.connection import ConnectionDoesNotExist

import dynamic_db_router
import dynroute
import dynroute.exceptions
import dynroute.signals
import dynroute.typing


@pytest.mark.parametrize(
    "module", [dynroute, dynroute.exceptions, dynroute.signals, dynroute.typing]
)
def test_all_is_sorted_and_complete(module):
    """__all__ is sorted and lists exactly the public names dynroute defines."""
    # Type aliases (a Literal's module is "typing") are public in dynroute.typing only;
    # elsewhere a typing object is an import. mutmut adds MutantDict to every module.
    defined_here = (
        ("dynroute", "types", "typing") if module is dynroute.typing else ("dynroute", "types")
    )
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "MutantDict"
        and not isinstance(value, (types.ModuleType, type(annotations)))
        and getattr(value, "__module__", "dynroute").startswith(defined_here)
    }
    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == public


def test_public_names_come_from_private_modules():
    """Implementation lives in underscore modules; the package only re-exports."""
    for name in dynroute.__all__:
        origin = getattr(getattr(dynroute, name), "__module__", "dynroute._")
        assert origin.startswith(("dynroute._", "dynroute.exceptions", "types")), name


def test_the_drop_in_module_exports_what_the_old_package_did():
    """dynamic_db_router exports in_database and DynamicDbRouter, nothing else."""
    assert dynamic_db_router.__all__ == ["DynamicDbRouter", "in_database"]
    assert dynamic_db_router.DynamicDbRouter is dynroute.DynamicDbRouter


@pytest.mark.parametrize(
    ("error", "django_or_python_base"),
    [
        (dynroute.exceptions.UsageError, TypeError),
        (dynroute.exceptions.InvalidTargetError, ValueError),
        (dynroute.exceptions.UnknownDatabaseError, ConnectionDoesNotExist),
        (dynroute.exceptions.ConfigurationError, ImproperlyConfigured),
        (dynroute.exceptions.RouteStateError, RuntimeError),
    ],
)
def test_each_error_is_a_dynroute_error_and_what_users_already_catch(error, django_or_python_base):
    """One root for everything dynroute raises, plus the class users already catch."""
    assert issubclass(error, dynroute.DynrouteError)
    assert issubclass(error, django_or_python_base)


def test_the_package_is_typed():
    """py.typed ships with both packages, so type checkers read their annotations."""
    for package in ("dynroute", "dynamic_db_router"):
        assert importlib.resources.files(package).joinpath("py.typed").is_file()


def test_help_shows_which_arguments_in_database_takes():
    """help(in_database) shows unset options as <unset>, not an object's address."""
    shown = str(inspect.signature(dynroute.in_database))
    assert shown.count("= <unset>") == 5  # target, read, write, policy, prevent_writes
    assert "object at 0x" not in shown
