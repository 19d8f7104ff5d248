"""The shape of src/: rooms a newcomer can read, and no import hidden to dodge a loop.

import-linter (``nox -s lint``) checks who imports whom; these check what it cannot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
MODULES = sorted(SRC.rglob("*.py"))
#: The rooms of the house, each a folder with a face (its __init__) that only re-exports.
ROOMS = (
    "core",
    "observe",
    "runtime",
    "writes",
    "replicas",
    "tenants",
    "routing",
    "http",
    "fleet",
)

#: The modules that import inside a function, and why: none does it to dodge a loop
#: (import-linter sees those imports too, and would report the loop).
LOCAL_IMPORTS = {
    # pytest loads plugins before Django's settings are configured.
    "dynroute/pytest_plugin.py",
    # The demo configures Django in main(), then imports what needs it.
    "dynroute/demo/__main__.py",
    # rich is optional (the cli extra): imported where the bar is made.
    "dynroute/management/commands/_progress.py",
}
#: A source file longer than this is several rooms' worth: split it.
MAX_FILE_LINES = 450
#: A class longer than this holds several concerns: split it.
MAX_CLASS_LINES = 150


def name(path: Path) -> str:
    """A module's path under src/, for messages and test ids."""
    return str(path.relative_to(SRC))


def local_imports(tree: ast.Module) -> list[int]:
    """The line numbers of the imports made inside a function of ``tree``."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.extend(
                inner.lineno
                for inner in ast.walk(node)
                if isinstance(inner, (ast.Import, ast.ImportFrom))
            )
    return lines


def test_no_module_imports_inside_a_function_but_those_listed_with_their_reason():
    """An import placed in a function to break a loop fails here: move the shared state down."""
    found = {
        name(path): lines
        for path in MODULES
        if (lines := local_imports(ast.parse(path.read_text())))
    }
    assert set(found) == LOCAL_IMPORTS, found


def test_the_check_for_local_imports_finds_one():
    """The scan itself works: a function-level import is found (a blind scan would pass above)."""
    tree = ast.parse("def f():\n    from dynroute import _block\n")
    assert local_imports(tree) == [2]


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_no_source_file_is_over_450_lines(path):
    """A room's module holds one concern; a longer one is split."""
    assert len(path.read_text().splitlines()) <= MAX_FILE_LINES


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_no_class_is_over_150_lines(path):
    """A class holds one concern; a longer one is split."""
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    }
    assert not long


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_has_a_face_that_only_re_exports(room):
    """A room's __init__ says what the room is for and lists its doors; the code is inside."""
    face = SRC / "dynroute" / room / "__init__.py"
    tree = ast.parse(face.read_text())
    assert ast.get_docstring(tree), f"{room}/__init__.py says what the room holds"
    defined = [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    assert not defined
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module != "__future__"
        for alias in node.names
    }
    exported = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets)
    )
    assert exported == sorted(exported)
    assert set(exported) == imported


def test_every_folder_of_the_package_is_a_room_or_an_integration():
    """A new folder is a new room: add it to ROOMS (and to the contracts in pyproject.toml)."""
    folders = {path.parent.name for path in (SRC / "dynroute").glob("*/__init__.py")}
    assert folders == {*ROOMS, "contrib", "demo", "management"}  # management: Django's
