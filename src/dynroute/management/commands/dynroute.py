"""``manage.py dynroute``: migrate, check, run commands on and create the directory's databases.

::

    manage.py dynroute migrate [--parallel N] [--per-server N] [--only NAME ...]
                               [--exclude NAME ...] [--resume] [--state FILE]
    manage.py dynroute showmigrations [--check] [--only ...] [--exclude ...]
    manage.py dynroute run COMMAND [ARG ...] [--parallel N] [--only ...] [--exclude ...]
    manage.py dynroute create NAME [--template DATABASE]

The databases are those of ``settings.DYNROUTE_DATABASES``, by name. Exit status 1
when a database failed (or, for ``showmigrations --check``, is behind).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dynroute.exceptions import DynrouteError
from dynroute.fleet import (
    Bounds,
    Outcome,
    Processes,
    check,
    check_conflicts,
    create_database,
    migrate,
    migrate_one,
    on_database,
    run_each,
    tell_finished,
    tell_started,
)
from dynroute.management.commands._progress import Bar, bar
from dynroute.tenants import Directory, load_directory

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from django.db.backends.base.base import BaseDatabaseWrapper

#: Where ``migrate`` keeps the names a run left failed or not run, for ``--resume``.
DEFAULT_STATE: Final = ".dynroute-migrate.json"


class Command(BaseCommand):
    """Work on every database of ``settings.DYNROUTE_DATABASES``."""

    help = "Migrate, check, run a command on, or create the databases of DYNROUTE_DATABASES."

    def add_arguments(self, parser: CommandParser) -> None:
        """The subcommands and their options."""
        subcommands = parser.add_subparsers(dest="subcommand", required=True)
        migrating = subcommands.add_parser("migrate", help="Apply pending migrations everywhere.")
        _selection(migrating)
        _pool_options(migrating)
        migrating.add_argument(
            "--resume",
            action="store_true",
            help="Only the databases the last run left failed or not run.",
        )
        migrating.add_argument(
            "--state",
            default=DEFAULT_STATE,
            help=f"Where to keep those names for --resume (default: {DEFAULT_STATE}).",
        )
        showing = subcommands.add_parser(
            "showmigrations", help="List the databases behind, and what they lack."
        )
        _selection(showing)
        _pool_options(showing)
        showing.add_argument(
            "--check", action="store_true", help="Exit with status 1 if a database is behind."
        )
        running = subcommands.add_parser("run", help="Run a management command on each database.")
        running.add_argument("command_name", metavar="COMMAND")
        running.add_argument("command_args", metavar="ARG", nargs="*")
        _selection(running)
        _pool_options(running)
        creating = subcommands.add_parser(
            "create", help="Create a database of the directory, and migrate it."
        )
        creating.add_argument("name", metavar="NAME")
        creating.add_argument(
            "--template", help="PostgreSQL: the database to copy (CREATE DATABASE ... TEMPLATE)."
        )

    def handle(self, *args: object, **options: Any) -> None:  # noqa: ANN401, ARG002 - Django's signature
        """Run the subcommand."""
        self.verbosity = int(options["verbosity"])
        subcommand: str = options["subcommand"]
        try:
            entries = load_directory()
            if subcommand == "create":
                self._create(entries, options["name"], options.get("template"))
                return
            names, kept = _names(entries, options)
            if subcommand == "migrate":
                check_conflicts()
        except DynrouteError as error:
            raise CommandError(str(error)) from None
        stop = threading.Event()
        reporter = _Reporter(self, subcommand, len(names))
        bounds = Bounds(
            parallel=options["parallel"],
            per_server=options["per_server"],
            recycle=options["recycle"],
            stop=stop,
            started=reporter.started,
            finished=reporter.finished,
        )
        if subcommand == "migrate":
            # Until the run ends, every name is left: a run killed outright resumes them.
            _save_state(Path(options["state"]), [*names, *kept])
        started = time.monotonic()
        with _stopped_by_ctrl_c(stop, self):
            try:
                reporter.start()
                if subcommand == "migrate":
                    outcomes = migrate(entries, names, bounds)
                elif subcommand == "showmigrations":
                    outcomes = check(entries, names, bounds)
                else:
                    work = functools.partial(
                        run_one, command=options["command_name"], args=options["command_args"]
                    )
                    workers = Processes(work, bounds.parallel, recycle=bounds.recycle)
                    outcomes = run_each(entries, names, workers, bounds)
            finally:
                reporter.close()
        seconds = time.monotonic() - started
        _summary(self, subcommand, outcomes=outcomes, seconds=seconds, options=options, kept=kept)

    def _create(self, entries: Directory, name: str, template: str | None) -> None:
        """Create ``name``'s database, then migrate it (the directory just read)."""
        self.stdout.write(create_database(name, template=template, entries=entries))
        outcome = migrate_one(name, entries)
        if outcome.status == "failed":
            msg = f"{name}: created, but migrating it failed: {outcome.error}"
            raise CommandError(msg)
        self.stdout.write(
            f"{name}: {outcome.status} ({_count(len(outcome.migrations), 'migration')})."
        )


def _names(entries: Directory, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The names chosen: ``--only``, ``--exclude``, or those ``--resume`` takes.

    Returns:
        The names, and those an earlier run left that this one does not take: they
        stay in the state, so that a run on some databases does not forget the others.
    """
    names = entries.select(options["only"], options["exclude"] or ())
    if options["subcommand"] != "migrate":
        return names, []
    state = Path(options["state"])
    try:
        left = list(json.loads(state.read_text(encoding="utf-8"))["left"])
    except FileNotFoundError:
        if options["resume"]:
            msg = f"Nothing to resume: no state file at {state} (the last run finished)."
            raise CommandError(msg) from None
        left = []
    if options["resume"]:
        names = [name for name in names if name in set(left)]
    chosen = set(names)
    return names, [name for name in left if name not in chosen]


def _summary(  # noqa: PLR0913 - what the run gives it
    command: Command,
    subcommand: str,
    *,
    outcomes: Sequence[Outcome],
    seconds: float,
    options: dict[str, Any],
    kept: list[str],
) -> None:
    """Print what happened to every database; exit 1 if any failed (or is behind)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    told = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    command.stdout.write(f"{_count(len(outcomes))} in {seconds:.1f} s: {told or 'none'}.")
    behind = [o for o in outcomes if o.status == "behind"]
    if subcommand == "showmigrations" and behind:
        command.stdout.write("Behind:")
        for outcome in behind:
            command.stdout.write(f"  {outcome.name}: {', '.join(outcome.migrations)}")
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        command.stderr.write(f"failed: {outcome.name}: {outcome.error}")
    left = [o.name for o in outcomes if o.status in {"failed", "not run"}]
    if subcommand == "migrate":
        _save_state(Path(options["state"]), [*left, *kept])
        if left:
            command.stderr.write(
                f"{_count(len(left))} not migrated: fix them, then run "
                "'manage.py dynroute migrate --resume'."
            )
    if left or (options.get("check") and behind):
        sys.exit(1)


def _count(number: int, noun: str = "database") -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _selection(parser: CommandParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Only these databases.")
    parser.add_argument("--exclude", nargs="+", metavar="NAME", help="Not these databases.")


def _pool_options(parser: CommandParser) -> None:
    parser.add_argument(
        "--parallel", type=_positive, default=4, help="Databases at once (default: 4)."
    )
    parser.add_argument(
        "--per-server",
        type=_positive,
        default=None,
        help="Databases at once on one server (default: --parallel shared among servers).",
    )
    parser.add_argument(
        "--recycle",
        type=_positive,
        default=Bounds().recycle,
        help=f"Databases a worker takes before a fresh one replaces it ({Bounds().recycle}).",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be 1 or more, got {value}"
        raise ValueError(msg)
    return value


def run_one(name: str, *, command: str, args: Sequence[str]) -> Outcome:
    """Run ``manage.py COMMAND ARGS`` inside a block on ``name`` (in a worker).

    A command with a ``--database`` option (``showmigrations``, ``dumpdata``, ...) reads
    that database, not the route: it is given the block's alias, unless ARGS name one.
    """

    def work(connection: BaseDatabaseWrapper) -> str:
        out = io.StringIO()
        options: dict[str, object] = {}
        if _takes_database(command) and not any(a.startswith("--database") for a in args):
            options["database"] = connection.alias
        call_command(command, *args, stdout=out, stderr=out, **options)
        return out.getvalue()

    printed, outcome = on_database(name, work)
    outcome.exception = None
    outcome.result = printed
    return outcome


def _takes_database(command: str) -> bool:
    """Whether the management command ``command`` has a ``--database`` option."""
    app = get_commands().get(command)
    if app is None:
        return False  # call_command says the command is unknown
    loaded = app if isinstance(app, BaseCommand) else load_command_class(app, command)
    parser = loaded.create_parser("manage.py", command)
    return any(action.dest == "database" for action in parser._actions)  # noqa: SLF001 - as call_command reads them


def _save_state(path: Path, left: list[str]) -> None:
    """Keep the names left for ``--resume``; none left, no file."""
    if left:
        path.write_text(json.dumps({"left": left}) + "\n", encoding="utf-8")
    else:
        path.unlink(missing_ok=True)


class _Reporter:
    """Tells each database as it ends: a progress bar on a terminal, lines otherwise."""

    def __init__(self, command: Command, operation: str, total: int) -> None:
        self._command = command
        self._operation = operation
        self._total = total
        self._done = 0
        self._bar: Bar | None = None

    def start(self) -> None:
        """Show the bar, on a terminal (inside the block that closes it)."""
        if self._command.verbosity:
            self._bar = bar(self._command.stdout, self._total, self._operation)

    def started(self, name: str) -> None:
        tell_started(name, self._operation)

    def finished(self, outcome: Outcome) -> None:
        self._done += 1
        tell_finished(outcome, self._operation)
        if self._bar is not None:
            self._bar.advance()
        quiet = outcome.status in {"up to date", "done"} and self._command.verbosity < 2
        if quiet or self._command.verbosity == 0:
            return
        line = f"[{self._done}/{self._total}] {outcome.name}: {outcome.status}"
        if outcome.migrations:
            line += f" ({_count(len(outcome.migrations), 'migration')})"
        line += f" in {outcome.seconds:.2f} s"
        if outcome.error:
            line += f": {outcome.error}"
        lines = [line]
        if isinstance(outcome.result, str) and outcome.result:
            lines += [f"  {outcome.name} | {printed}" for printed in outcome.result.splitlines()]
        for each in lines:
            if self._bar is not None:
                self._bar.print(each)
            else:
                self._command.stdout.write(each)

    def close(self) -> None:
        """Leave the bar, if there is one."""
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def _stopped_by_ctrl_c(stop: threading.Event, command: Command) -> Generator[None, None, None]:
    """The first Ctrl-C stops starting databases; the second interrupts the ones running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(_signum: int, _frame: object) -> None:
        stop.set()
        command.stderr.write(
            "Stopping: no database starts now; the ones running finish "
            "(Ctrl-C again to interrupt them)."
        )
        signal.signal(signal.SIGINT, second)

    def second(_signum: int, _frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous: Callable[..., object] | int | None = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
