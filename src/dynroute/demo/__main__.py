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
    """Record the statements run in this thread, also on databases registered later."""
    from django.db import connections  # noqa: PLC0415 - Django is set up by main()
    from django.db.backends.signals import connection_created  # noqa: PLC0415

    recorder = Recorder()

    def record_new(connection: Any, **kwargs: Any) -> None:  # noqa: ANN401, ARG001 - signal
        if recorder not in connection.execute_wrappers:
            connection.execute_wrappers.append(recorder)

    connection_created.connect(record_new)
    try:
        with ExitStack() as stack:
            for alias in connections:
                stack.enter_context(connections[alias].execute_wrapper(recorder))
            yield recorder
    finally:
        connection_created.disconnect(record_new)


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
    runtime_steps(folder=Path(settings.DATABASES["default"]["NAME"]).parent)


def runtime_steps(folder: Path) -> None:
    """Steps 7 and 8: databases that are not in settings."""
    from django.db import connections  # noqa: PLC0415 - after setup()
    from django.db.backends.signals import connection_created  # noqa: PLC0415

    from dynroute import close_idle_connections, in_database  # noqa: PLC0415
    from dynroute.demo.models import Note  # noqa: PLC0415

    archive = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "archive.sqlite3")}
    before = sorted(connections.databases)
    with recording() as seen, in_database(archive, write=True) as route:
        with connections[route.alias].schema_editor() as editor:
            editor.create_model(Note)
        Note.objects.create(text="archived")
        Note.objects.count()
        during = sorted(connections.databases)
    step(
        7,
        f"A database not in settings: registered as {route.alias!r} for the block only",
        "archive = {'ENGINE': 'django.db.backends.sqlite3', 'NAME': '.../archive.sqlite3'}\n"
        "with in_database(archive, write=True) as route:\n"
        "    Note.objects.create(...); Note.objects.count()",
        seen,
        expect=(route.alias, route.alias),
    )
    print(f"   aliases during the block: {during}; after it: {sorted(connections.databases)}")
    if sorted(connections.databases) != before:
        FAILURES.append("step 7: the runtime alias outlived its block")

    tenants: dict[str, dict[str, Any]] = {}
    for name in ("acme", "globex"):
        tenant = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(folder / f"tenant_{name}.sqlite3"),
            "CONN_MAX_AGE": 60,  # keep the connection for the tenant's next request
        }
        with in_database(tenant, write=True, alias=f"tenant_{name}") as route:
            with connections[route.alias].schema_editor() as editor:
                editor.create_model(Note)
            Note.objects.create(text=f"{name}'s note")
        tenants[name] = tenant
    close_idle_connections()

    opened: list[str] = []

    def count_connect(connection: Any, **kwargs: Any) -> None:  # noqa: ANN401, ARG001 - signal
        opened.append(connection.alias)

    connection_created.connect(count_connect)
    try:
        with recording() as seen:
            for name in ("acme", "globex", "acme", "globex", "acme", "globex"):
                with in_database(tenants[name], write=True, alias=f"tenant_{name}"):
                    Note.objects.create(text="request")
                    Note.objects.count()
    finally:
        connection_created.disconnect(count_connect)
    closed = close_idle_connections()
    step(
        8,
        f"A database per tenant, six requests: {len(opened)} connections opened, "
        f"{closed} closed at shutdown",
        "for request in requests:   # CONN_MAX_AGE=60: reuse each tenant's connection\n"
        "    with in_database(tenant_settings(request), write=True, alias=...):\n"
        "        ...\n"
        "close_idle_connections()   # at worker shutdown",
        seen,
        expect=("tenant_acme, tenant_globex", "tenant_acme, tenant_globex"),
    )
    if (len(opened), closed) != (2, 2):
        FAILURES.append(f"step 8: expected 2 connections opened and closed, got {opened}")


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
