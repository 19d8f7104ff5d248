"""Every Python example in docs/ runs, so the documentation cannot drift from the code.

Convention: each fenced ``python`` block of a page runs, in order, in one namespace per
page (later examples use what earlier ones defined), on the test databases. The pages'
``myapp.models`` is ``tests/testapp/models.py``. A block with top-level ``await`` or
``async with`` runs as a coroutine, through ``async_to_sync``. A block that cannot run
here (a settings fragment that is not valid Python, code that needs a server or a
package the tests do not install) is preceded by ``<!-- not-run: the reason -->``;
such blocks are few, and each names its reason. Strings naming a ``dynroute.`` object
(``"dynroute.middleware.DatabaseMiddleware"``) must import, so a settings example
cannot name a path that does not exist.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.utils.module_loading import import_string

from tests.testapp import models as testapp_models

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
_FENCE = re.compile(
    r"^(?:<!-- (?P<kind>not-run|models): (?P<reason>[^\n]+?) -->\n)?```python\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_DOTTED = re.compile(r"^dynroute(\.\w+)+$")
# At most this many blocks may be marked not-run, over all pages.
MAX_NOT_RUN = 10


@dataclass(frozen=True)
class Example:
    """One fenced ``python`` block of a page."""

    page: Path
    line: int
    code: str
    not_run: str | None
    #: a listing of the test app's models, compared with them field by field
    models: bool = False

    def __str__(self) -> str:
        return f"{self.page.relative_to(DOCS.parent)}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The ``python`` blocks of ``page``, with the line each starts on."""
    text = page.read_text(encoding="utf-8")
    return [
        Example(
            page=page,
            line=text.count("\n", 0, match.start("code")) + 1,
            code=textwrap.dedent(match["code"]),
            not_run=match["reason"] if match["kind"] == "not-run" else None,
            models=match["kind"] == "models",
        )
        for match in _FENCE.finditer(text)
    ]


def _compiled(example: Example) -> tuple[types.CodeType, bool]:
    """Compile ``example``; say whether it has top-level ``await``."""
    # Line numbers in tracebacks are the page's.
    source = "\n" * (example.line - 1) + example.code
    code = compile(
        source, str(example.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    return code, bool(code.co_flags & 0x80)  # CO_COROUTINE: it awaits at the top level


def _check_dotted_paths(example: Example) -> None:
    """Import every ``"dynroute.…"`` string of ``example``."""
    for node in ast.walk(ast.parse(example.code)):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _DOTTED.match(node.value)
        ):
            try:
                import_string(node.value)
            except ImportError as error:
                pytest.fail(f"{example}: {node.value!r} does not import: {error}")


def _check_models(example: Example) -> None:
    """Each model of the listing is the test app's, with the same fields and options."""
    for node in ast.parse(example.code).body:
        assert isinstance(node, ast.ClassDef), f"{example}: only model classes here"
        model = getattr(testapp_models, node.name)
        declared = [item for item in node.body if isinstance(item, ast.Assign)]
        names = [field.name for field in model._meta.get_fields() if field.concrete]
        assert sorted(names) == sorted(["id", *(item.targets[0].id for item in declared)])
        for item in declared:
            field = model._meta.get_field(item.targets[0].id)
            assert type(field).__name__ == item.value.func.attr, f"{example}: {field}"
            for keyword in item.value.keywords:
                if keyword.arg in {"max_length", "default"}:
                    expected = ast.literal_eval(keyword.value)
                    assert getattr(field, keyword.arg) == expected, f"{example}: {field}"


@pytest.fixture
def myapp(monkeypatch):
    """Make the pages' ``from myapp.models import ...`` import the test app's models."""
    package = types.ModuleType("myapp")
    # A folder of its own, so that Django can make an app of it (isolate_apps("myapp")).
    package.__path__ = [str(Path(testapp_models.__file__).parent)]
    package.models = testapp_models
    monkeypatch.setitem(sys.modules, "myapp", package)
    monkeypatch.setitem(sys.modules, "myapp.models", testapp_models)


@pytest.fixture
def clean_up():
    """Undo what examples leave on purpose: signal receivers, kept connections."""
    from dynroute import close_idle_connections, replicas  # noqa: PLC0415
    from dynroute.observe import _signals  # noqa: PLC0415

    before = {signal: list(signal.receivers) for signal in _signals._ALL}
    yield
    for signal, receivers in before.items():
        with signal.lock:
            signal.receivers = receivers
            signal.sender_receivers_cache.clear()
    _signals._update()
    close_idle_connections()
    replicas.mark_up()


@pytest.mark.django_db(databases=["default", "other", "replica1", "replica2"], transaction=True)
@pytest.mark.usefixtures("myapp", "dynroute_runtime_databases", "clean_up")
@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch):
    """Every unmarked ``python`` block of the page runs without error."""
    monkeypatch.chdir(tmp_path)  # files that examples create (SQLite databases) land here
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for example in examples(page):
        if example.not_run is not None:
            continue
        if example.models:
            _check_models(example)
            continue
        _check_dotted_paths(example)
        code, awaits = _compiled(example)
        if awaits:

            async def run(code=code):
                await eval(code, namespace)  # noqa: S307 - the page's own example

            async_to_sync(run)()
        else:
            exec(code, namespace)  # noqa: S102 - the page's own example


def test_examples_are_found():
    """The extraction finds the pages' examples (a broken pattern would run nothing)."""
    found = [example for page in PAGES for example in examples(page)]
    assert len(found) >= 30
    fences = sum(page.read_text(encoding="utf-8").count("```python\n") for page in PAGES)
    assert len(found) == fences, "a python fence is not at the start of a line, or unclosed"


def test_few_examples_are_not_run_and_each_says_why():
    """Blocks marked not-run are few, and each names a reason."""
    marked = [example for page in PAGES for example in examples(page) if example.not_run]
    assert len(marked) <= MAX_NOT_RUN, [f"{example}: {example.not_run}" for example in marked]
    for example in marked:
        assert len(example.not_run.split()) >= 3, f"{example}: give a reason, not a word"


def _directives(page: str) -> set[str]:
    """The objects a reference page renders (its ``::: dotted.path`` lines)."""
    text = (DOCS / "reference" / page).read_text(encoding="utf-8")
    return set(re.findall(r"^::: ([\w.]+)$", text, re.MULTILINE))


def test_the_reference_renders_every_public_name():
    """Each name of dynroute.__all__, the exceptions, types, middleware and signals."""
    import dynroute  # noqa: PLC0415
    import dynroute.signals  # noqa: PLC0415

    assert {f"dynroute.{name}" for name in dynroute.__all__} <= _directives("api.md")
    assert "dynroute.exceptions" in _directives("exceptions.md")  # the module, all of it
    assert "dynroute.typing" in _directives("typing.md")
    assert "dynroute.middleware" in _directives("middleware.md")
    middleware = (DOCS / "reference" / "middleware.md").read_text(encoding="utf-8")
    assert "- DatabaseMiddleware" in middleware
    assert "- PrimaryReplicaMiddleware" in middleware
    signals = (DOCS / "reference" / "signals.md").read_text(encoding="utf-8")
    for name in dynroute.signals.__all__:
        assert f"`{name}`" in signals, name
