"""One database's migrations: what it has applied (one query), what it lacks, applying it.

The migration graph is built once per process (:func:`graph`), from the disk, without
a connection: Django's ``migrate`` builds it again for every database, which is most
of its time when there is nothing to apply. A database's applied migrations are read
with one ``SELECT`` of ``django_migrations``; the graph says what is pending.

Applying follows Django's ``migrate`` command step by step (consistency check,
``pre_migrate``, the executor, the re-rendered apps, ``post_migrate``), with the graph
built once and the project state before the plan kept for the next database at the
same point (most of a fleet is).

A database is locked while it is migrated, so that two runs never migrate it
together: a session advisory lock on PostgreSQL, ``GET_LOCK`` on MariaDB and MySQL.
SQLite's own file lock serialises writers.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import threading
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, cast

from django.apps import apps as global_apps
from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
from django.db import DatabaseError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ModelState
from django.db.utils import load_backend
from django.utils.module_loading import module_has_submodule

from dynroute.exceptions import ConfigurationError

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.migrations.migration import Migration
    from django.db.migrations.state import ProjectState, StateApps

__all__ = ["Graph", "applied", "graph", "locked", "migrate"]

#: The key of the PostgreSQL advisory lock: advisory locks are per database, so one
#: key serves every database (the first 8 bytes of the SHA-256 of the name, signed).
_PG_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"dynroute migrate").digest()[:8], "big", signed=True
)
#: Seconds a run waits for another run's lock on a database before it reports it.
LOCK_TIMEOUT: Final = 3600

Key = tuple[str, str]


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """The migrations on disk, loaded once: what every database is compared with."""

    loader: MigrationLoader
    #: every migration of the graph (squashed ones standing for what they replace)
    nodes: frozenset[Key]
    #: squashed migration -> the migrations it replaces
    replacements: dict[Key, tuple[Key, ...]]
    #: app label -> its leaf migrations, where an app has more than one (to merge)
    conflicts: dict[str, list[str]]

    def pending(self, done: set[Key]) -> list[Key]:
        """The migrations of the graph a database with ``done`` applied lacks, in order."""
        done = set(done)
        for squashed, replaced in self.replacements.items():
            if all(key in done for key in replaced):
                done.add(squashed)
        missing = self.nodes - done
        if not missing:
            return []
        # In the graph's order (parents first): what a plan would apply.
        plan: list[Key] = []
        seen: set[Key] = set()
        for leaf in self.loader.graph.leaf_nodes():
            for key in self.loader.graph.forwards_plan(leaf):
                if key in missing and key not in seen:
                    seen.add(key)
                    plan.append(key)
        return plan


_graph: Graph | None = None
_graph_lock = threading.Lock()


def graph() -> Graph:
    """The migration graph of this process, built on first use."""
    global _graph  # noqa: PLW0603 - once per process, by design
    with _graph_lock:
        if _graph is None:
            # As Django's migrate: each app's management module imported, so that the
            # post_migrate receivers registered there are connected (in every worker).
            for app_config in global_apps.get_app_configs():
                if module_has_submodule(app_config.module, "management"):
                    import_module(".management", app_config.name)
            loader = MigrationLoader(None)
            replacements = {
                key: tuple(migration.replaces) for key, migration in loader.replacements.items()
            }
            nodes = frozenset(loader.graph.nodes)
            _graph = Graph(loader, nodes, replacements, loader.detect_conflicts())
        return _graph


def check_conflicts() -> None:
    """Refuse a graph where an app has two leaf migrations, as Django's migrate does.

    Raises:
        ConfigurationError: Naming each app and its leaves, and the fix.
    """
    conflicts = graph().conflicts
    if conflicts:
        named = "; ".join(f"{', '.join(names)} in {app}" for app, names in conflicts.items())
        msg = (
            f"Conflicting migrations detected: {named}. Run 'manage.py makemigrations "
            "--merge' to merge them; no database was migrated."
        )
        raise ConfigurationError(msg)


def applied(connection: BaseDatabaseWrapper) -> set[Key]:
    """The migrations ``connection``'s database has applied: one query.

    A database without a ``django_migrations`` table has applied none.
    """
    table = connection.ops.quote_name(MigrationRecorder.Migration._meta.db_table)  # noqa: SLF001 - Django's documented model meta
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT app, name FROM {table}")  # noqa: S608 - a quoted table name
            rows: list[tuple[str, str]] = cursor.fetchall()
    except DatabaseError:
        if table_exists(connection):
            raise
        return set()
    return {(app, name) for app, name in rows}


def read_applied(settings: Mapping[str, Any], alias: str) -> set[Key] | None:
    """What a database has applied, on a connection of the driver's own: one query.

    The check of a thousand databases: no block, no registration, none of Django's
    session set-up (a time zone to set, a role): a connection, the ``SELECT``, closed.

    Returns:
        ``None`` when the query fails (no table yet, no right to read it): the caller
        asks again the thorough way (:func:`applied`, in a block).

    Raises:
        Exception: The driver's, when the database cannot be reached.
    """
    copied = dict(settings)
    options = copied.get("OPTIONS")
    if isinstance(options, dict) and "pool" in options:
        # One connection, closed at once: a pool would be opened per database, and kept.
        copied["OPTIONS"] = {k: v for k, v in options.items() if k != "pool"}  # pyright: ignore[reportUnknownVariableType]
    wrapper = load_backend(str(settings["ENGINE"])).DatabaseWrapper(copied, alias)
    table = wrapper.ops.quote_name(MigrationRecorder.Migration._meta.db_table)  # noqa: SLF001
    raw = wrapper.get_new_connection(wrapper.get_connection_params())
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(f"SELECT app, name FROM {table}")  # noqa: S608 - a quoted table name
            rows: list[tuple[str, str]] = cursor.fetchall()
        except wrapper.Database.DatabaseError:
            return None
        finally:
            cursor.close()
    finally:
        raw.close()
    return {(app, name) for app, name in rows}


def table_exists(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``django_migrations`` exists (asked only after the ``SELECT`` failed)."""
    if connection.vendor == "postgresql" and not connection.get_autocommit():
        return True  # the failed SELECT aborted the transaction: report that failure
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    return MigrationRecorder.Migration._meta.db_table in tables  # noqa: SLF001


class locked:  # noqa: N801 - used as a context manager, like Django's atomic
    """Hold the migration lock of ``connection``'s database (another run's waits)."""

    __slots__ = ("_connection", "_file", "_timeout")

    def __init__(self, connection: BaseDatabaseWrapper, timeout: float = LOCK_TIMEOUT) -> None:
        """Lock ``connection``'s database for as long as the ``with`` block runs."""
        self._connection = connection
        self._timeout = timeout
        self._file: IO[bytes] | None = None

    def __enter__(self) -> None:
        """Wait for the lock.

        Raises:
            TimeoutError: Another run held it for ``timeout`` seconds.
        """
        connection = self._connection
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # set_config takes parameters where SET cannot (server-side binding).
                timeout = f"{int(self._timeout * 1000)}ms"
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", [timeout])
                try:
                    cursor.execute("SELECT pg_advisory_lock(%s)", [_PG_LOCK_KEY])
                finally:
                    cursor.execute("SET lock_timeout = DEFAULT")
            elif connection.vendor == "mysql":
                cursor.execute(
                    "SELECT GET_LOCK(CONCAT('dynroute:migrate:', SHA1(DATABASE())), %s)",
                    [int(self._timeout)],
                )
                (got,) = cursor.fetchone() or (None,)
                if got != 1:
                    msg = f"another run held the migration lock for {self._timeout:.0f} s"
                    raise TimeoutError(msg)
        if connection.vendor == "sqlite":
            self._file = _file_lock(str(connection.settings_dict["NAME"]), self._timeout)

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        """Release the lock (it also dies with the connection).

        A failure to release it (the connection broke) never hides the error of the
        migration that ran under it.
        """
        connection = self._connection
        if self._file is not None:
            self._file.close()  # closing the file releases its lock
            self._file = None
        if connection.connection is None:
            return
        try:
            self._release()
        except DatabaseError:
            if exc_type is None:
                raise

    def _release(self) -> None:
        connection = self._connection
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_PG_LOCK_KEY])
            elif connection.vendor == "mysql":
                cursor.execute("SELECT RELEASE_LOCK(CONCAT('dynroute:migrate:', SHA1(DATABASE())))")


def _file_lock(database: str, timeout: float) -> IO[bytes]:
    """Lock ``<database>.dynroute-lock`` (SQLite), waiting up to ``timeout`` seconds.

    A file beside the database, never the database itself: closing a file of the
    database would drop the locks SQLite holds on it in this process. Without
    ``fcntl`` (Windows), the file is opened but not locked.

    Raises:
        TimeoutError: Another run held it all that time.
    """
    file = Path(f"{database}.dynroute-lock").open("ab")  # noqa: SIM115 - held until __exit__
    deadline = time.monotonic() + timeout
    if sys.platform == "win32":  # pragma: no cover - no fcntl
        return file
    while True:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # noqa: PERF203 - a wait, not a loop over data
            if time.monotonic() > deadline:
                file.close()
                msg = f"another run held the migration lock for {timeout:.0f} s"
                raise TimeoutError(msg) from None
            time.sleep(0.05)
        else:
            return file


#: The project state before a plan, by the migrations applied: most databases of a
#: fleet stand at the same point, and building it replays every applied migration.
_states: dict[frozenset[Key], ProjectState] = {}
_STATES_KEPT: Final = 8
#: The apps given to ``post_migrate``, by the migrations applied after the plan.
_post_apps: dict[frozenset[Key], StateApps] = {}


def migrate(connection: BaseDatabaseWrapper, done: set[Key], *, verbosity: int = 0) -> list[Key]:
    """Apply what ``connection``'s database lacks, as ``manage.py migrate`` would.

    Returns:
        The migrations applied, in order.

    Raises:
        InconsistentMigrationHistory: A migration is applied before one it depends on.
        Exception: Whatever a migration raised; Django's per-migration transaction
            (where the database has transactional DDL) undid that migration.
    """
    base = graph()
    connection.prepare_database()  # as Django's migrate (PostGIS creates its extension)
    executor = _executor(connection, base, done)
    executor.loader.check_consistent_history(connection)
    targets = executor.loader.graph.leaf_nodes()
    plan: list[tuple[Migration, bool]] = executor.migration_plan(targets)
    if not plan:
        return []
    key = frozenset(executor.loader.applied_migrations or {})
    before = _states.get(key) or _project_state(executor, key)
    emit_pre_migrate_signal(
        verbosity,
        interactive=False,
        db=connection.alias,
        apps=before.apps,
        plan=plan,
    )
    after = executor.migrate(targets, plan=plan, state=before.clone())
    final = key | {(migration.app_label, migration.name) for migration, _ in plan}
    post_apps = _post_apps.get(final) or _rendered(after, final)
    emit_post_migrate_signal(
        verbosity, interactive=False, db=connection.alias, apps=post_apps, plan=plan
    )
    return [(migration.app_label, migration.name) for migration, _ in plan]


def _rendered(after: ProjectState, final: frozenset[Key]) -> StateApps:
    """The apps ``post_migrate`` is given after a plan, as Django's migrate renders them.

    The real apps' models are rendered again with their relationships. Kept for the
    next database that ends at the same point: rendering them is a third of the work
    of migrating one database.
    """
    after.clear_delayed_apps_cache()
    post_apps = after.apps
    with post_apps.bulk_update():
        model_keys: list[tuple[str, str]] = []
        for model_state in post_apps.real_models:
            model_key = (model_state.app_label, model_state.name_lower)
            model_keys.append(model_key)
            post_apps.unregister_model(*model_key)
    post_apps.render_multiple(
        [ModelState.from_model(global_apps.get_model(*model)) for model in model_keys]
    )
    if len(_post_apps) >= _STATES_KEPT:
        _post_apps.pop(next(iter(_post_apps)))
    _post_apps[final] = post_apps
    return post_apps


def _project_state(executor: MigrationExecutor, key: frozenset[Key]) -> ProjectState:
    """The project state with ``key`` applied, built (by replaying them) and kept."""
    # What Django's migrate command calls (private, so not in django-stubs).
    create = cast(
        "Callable[..., ProjectState]",
        executor._create_project_state,  # type: ignore[attr-defined]  # noqa: SLF001
    )
    state = create(with_applied_migrations=True)
    if len(_states) >= _STATES_KEPT:
        _states.pop(next(iter(_states)))
    _states[key] = state
    return state


class _Executor(MigrationExecutor):
    """Django's executor, given a loader instead of building one."""

    def __init__(self, connection: BaseDatabaseWrapper, loader: MigrationLoader) -> None:
        self.connection = connection
        self.loader = loader
        self.recorder = MigrationRecorder(connection)
        self.progress_callback = None

    def check_replacements(self) -> None:
        """Record squashed migrations whose replaced ones are all applied (if there are any).

        Django's reads ``django_migrations`` again (two queries) even when no migration
        of the project replaces others.
        """
        if self.loader.replacements:
            super().check_replacements()


def _executor(connection: BaseDatabaseWrapper, base: Graph, done: set[Key]) -> MigrationExecutor:
    """An executor on ``connection`` with the process's graph, unless it cannot serve.

    A database that applied part of a squashed migration's replaced ones needs a graph
    of its own (Django keeps the replaced ones then): that one is built for it.
    """
    partial = any(
        any(key in done for key in replaced) and not all(key in done for key in replaced)
        for replaced in base.replacements.values()
    )
    if partial:
        return MigrationExecutor(connection)
    loader = copy.copy(base.loader)
    loader.connection = connection
    # Records of django_migrations, as Django's recorder gives (django-stubs says
    # Migration classes, which it is not).
    recorded: dict[Key, Any] = {
        key: MigrationRecorder.Migration(app=key[0], name=key[1]) for key in done
    }
    for squashed, replaced in base.replacements.items():
        if all(key in done for key in replaced):
            recorded[squashed] = MigrationRecorder.Migration(app=squashed[0], name=squashed[1])
    loader.applied_migrations = recorded
    return _Executor(connection, loader)
