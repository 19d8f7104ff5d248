"""Walk through dynroute's quickstart, showing which database served each query.

Run ``python -m dynroute.demo``. It builds a throwaway Django project whose two
databases, ``default`` and ``external``, are SQLite files in a temporary folder, and
records every SQL statement each connection runs. Each step prints where its reads and
its writes went, checks that against what the README promises, and the demo exits
with status 1 if any step disagrees.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings

if TYPE_CHECKING:
    from collections.abc import Callable, Generator


@dataclass
class Recorder:
    """Collects which database each statement ran on, split into reads and writes."""

    reads: list[str] = field(default_factory=list[str])
    writes: list[str] = field(default_factory=list[str])

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,  # noqa: ANN401 - Django's execute-wrapper signature
        many: bool,  # noqa: FBT001 - Django's execute-wrapper signature
        context: dict[str, Any],
    ) -> Any:  # noqa: ANN401 - whatever the cursor returns
        """Note the statement's database, then run it."""
        alias = context["connection"].alias
        (self.reads if sql.lstrip().upper().startswith("SELECT") else self.writes).append(alias)
        return execute(sql, params, many, context)


@contextmanager
def recording() -> Generator[Recorder, None, None]:
    """Record the statements run on every configured database in this thread."""
    from django.db import connections  # noqa: PLC0415 - Django is set up by main()

    recorder = Recorder()
    with ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(recorder))
        yield recorder


def where(aliases: list[str]) -> str:
    """Say which databases a list of statements went to."""
    return ", ".join(sorted(set(aliases))) or "(none)"


FAILURES: list[str] = []


def step(number: int, title: str, code: str, recorder: Recorder, expect: tuple[str, str]) -> None:
    """Print one step and check it against the (read, write) databases it should show."""
    got_read, got_write = where(recorder.reads), where(recorder.writes)
    read, write = expect
    ok = (got_read, got_write) == expect
    print(f"\n{number}. {title}")
    for line in code.strip("\n").splitlines():
        print(f"     {line}")
    print(f"   read  -> {got_read}")
    print(f"   write -> {got_write}")
    if not ok:
        FAILURES.append(f"step {number}: expected read {read}, write {write}")
        print(f"   UNEXPECTED: expected read -> {read}, write -> {write}")


def configure(folder: Path) -> None:
    """Set up a Django project with two SQLite databases in ``folder``."""
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": folder / "default.sqlite3"},
            "external": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": folder / "external.sqlite3",
            },
        },
        DATABASE_ROUTERS=["dynroute.DynamicDbRouter"],
        INSTALLED_APPS=["dynroute.demo"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.core.management import call_command  # noqa: PLC0415 - needs setup()

    for alias in ("default", "external"):
        call_command("migrate", run_syncdb=True, database=alias, verbosity=0)


def walk() -> None:
    """Run the steps."""
    from asgiref.sync import async_to_sync  # noqa: PLC0415 - after setup()

    from dynroute import in_database  # noqa: PLC0415
    from dynroute.demo.models import Note  # noqa: PLC0415

    Note.objects.using("external").create(text="already in external")

    with recording() as seen, in_database("external"):
        Note.objects.count()
        Note.objects.create(text="written inside")
    step(
        1,
        "A configured alias: reads go there; writes stay on default (write=False)",
        'with in_database("external"):\n    Note.objects.count()\n    Note.objects.create(...)',
        seen,
        expect=("external", "default"),
    )

    with recording() as seen, in_database("external", write=True):
        Note.objects.count()
        Note.objects.create(text="written to external")
    step(
        2,
        "write=True: reads and writes both go there",
        'with in_database("external", write=True):\n    ...same queries...',
        seen,
        expect=("external", "external"),
    )

    with recording() as seen, in_database("external", read=False, write=True):
        Note.objects.count()
        Note.objects.create(text="write-only")
    step(
        3,
        "read=False, write=True: writes go there, reads stay on default",
        'with in_database("external", read=False, write=True):\n    ...same queries...',
        seen,
        expect=("default", "external"),
    )

    with in_database("external", write=True), in_database("default"), recording() as seen:
        Note.objects.count()
        Note.objects.create(text="nested")
    step(
        4,
        "Nesting: the inner block reads default; its writes fall back to the outer block",
        'with in_database("external", write=True):\n'
        '    with in_database("default"):\n'
        "        ...same queries...",
        seen,
        expect=("default", "external"),
    )

    @in_database("external")
    def count_notes() -> int:
        return Note.objects.count()

    with recording() as seen:
        first, second = count_notes(), count_notes()
    step(
        5,
        f"A decorator routes every call (counted {first}, then {second})",
        '@in_database("external")\ndef count_notes():\n    return Note.objects.count()',
        seen,
        expect=("external", "(none)"),
    )

    async def async_step() -> tuple[int, int]:
        async def count_in(alias: str) -> int:
            async with in_database(alias):
                await asyncio.sleep(0)
                return await Note.objects.acount()

        async with in_database("external", write=True):
            await Note.objects.acreate(text="async")
        on_default, on_external = await asyncio.gather(count_in("default"), count_in("external"))
        return on_default, on_external

    with recording() as seen:
        on_default, on_external = async_to_sync(async_step)()
    step(
        6,
        f"Async: two tasks, two routes, at the same time ({on_default} vs {on_external} notes)",
        'async with in_database("external", write=True):\n'
        "    await Note.objects.acreate(...)\n"
        'await gather(count_in("default"), count_in("external"))',
        seen,
        expect=("default, external", "external"),
    )


def main() -> int:
    """Run the demo in a temporary folder; return the exit status."""
    with tempfile.TemporaryDirectory(prefix="dynroute-demo-") as folder:
        configure(Path(folder))
        print(f"dynroute demo: Django {django.get_version()}, SQLite files in {folder}")
        walk()
        from django.db import connections  # noqa: PLC0415

        connections.close_all()
    if FAILURES:
        print("\nThe demo did not behave as documented:", *FAILURES, sep="\n  ")
        return 1
    print("\nEvery step routed as documented.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
