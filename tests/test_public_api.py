"""The public surface: what is exported, from where, and the exception families."""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import inspect
import re
import types
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils.connection import ConnectionDoesNotExist

import dynamic_db_router
import dynamic_db_router.router
import dynroute
import dynroute.exceptions
import dynroute.middleware
import dynroute.signals
import dynroute.testing
import dynroute.typing

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "module",
    [dynroute, dynroute.exceptions, dynroute.middleware, dynroute.signals, dynroute.typing],
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


@pytest.mark.parametrize(
    "module", [dynroute, dynroute.middleware, dynroute.signals, dynroute.testing]
)
def test_public_names_come_from_private_modules(module):
    """Implementation lives in underscore modules of the rooms; the public modules re-export."""
    for name in module.__all__:
        origin = getattr(getattr(module, name), "__module__", "dynroute._")
        private = any(part.startswith("_") for part in origin.split(".")[1:])
        assert private or origin in ("dynroute.exceptions", "dynroute.testing", "types"), name


#: A dotted name in the docs that starts with a package of ours: a path users import.
DOTTED = re.compile(r"\b(?:dynroute|dynamic_db_router)(?:\.[A-Za-z_]\w*)+")
#: Dotted names that are not import paths: system check ids, and the package's __all__.
NOT_PATHS = re.compile(r"dynroute\.(?:[EW]\d+|__all__)$")


def documented_paths() -> list[str]:
    """Every import path the README and the docs site name."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = {path for page in pages for path in DOTTED.findall(page.read_text())}
    return sorted(path for path in found if not NOT_PATHS.match(path))


def test_the_docs_name_the_paths_this_test_checks():
    """The scan finds the paths users are told about (a broken pattern would find none)."""
    paths = documented_paths()
    for path in (
        "dynroute.DynamicDbRouter",
        "dynroute.middleware.PrimaryReplicaMiddleware",
        "dynroute.middleware.DatabaseMiddleware",
        "dynroute.contrib.debug_toolbar.RoutingPanel",
        "dynroute.typing.CloseReason",
        "dynamic_db_router.DynamicDbRouter",
    ):
        assert path in paths


@pytest.mark.parametrize("path", documented_paths())
def test_every_documented_import_path_works(path):
    """Each dotted path the docs give (a module, or a name in one) imports as written."""
    if path.startswith("dynroute.contrib.debug_toolbar") and not importlib.util.find_spec(
        "debug_toolbar"
    ):
        # Without the extra, the package says which one to install (nox -s browser
        # imports it for real).
        with pytest.raises(ImportError, match=r"django-dynroute\[debug-toolbar\]"):
            importlib.import_module("dynroute.contrib.debug_toolbar")
        return
    parts = path.split(".")
    value: object = importlib.import_module(parts[0])
    for depth, attribute in enumerate(parts[1:], start=2):
        # A submodule not imported yet is not an attribute of its package.
        value = getattr(value, attribute, None) or importlib.import_module(".".join(parts[:depth]))


@pytest.mark.parametrize(
    "path",
    [
        "dynamic_db_router.in_database",
        "dynamic_db_router.DynamicDbRouter",
        "dynamic_db_router.router.in_database",
        "dynamic_db_router.router.DynamicDbRouter",
        "dynroute.apps.DynrouteConfig",
        "dynroute.checks.check_routers",
        "dynroute.checks.check_replica_mirrors",
        "dynroute.testing.RuntimeDatabasesMixin",
        "dynroute.testing.allow_runtime_databases",
        "dynroute.pytest_plugin.dynroute_runtime_databases",
    ],
)
def test_the_paths_settings_and_entry_points_name_import(path):
    """What settings, INSTALLED_APPS and the pytest entry point name imports as written."""
    module_name, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module_name), name) is not None


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
