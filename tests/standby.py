"""A real PostgreSQL streaming standby of the test server, for tests/test_replica_standby.py.

``start()`` takes a base backup of the server behind the ``default`` alias into a
temporary directory (``pg_basebackup -R``: it writes the standby's connection to the
primary) and starts it with ``pg_ctl`` on a free port, as the ``postgres`` user
(DJANGO_NOTES §12). The server must accept replication connections from 127.0.0.1:
if its ``pg_hba.conf`` does not, ``start()`` adds the line and reloads it (root, or
the file's owner, can). Everything it starts, ``Standby.remove()`` stops and deletes.

The standby streams through a replication slot of its own (``-C -S``), which keeps
on the primary every WAL segment the standby has not received yet: without one, the
server's other work (another suite creating databases, with ``wal_keep_size=0``)
can remove a segment the standby still needs, and it stops replaying. ``remove()``
drops the slot (a slot left behind would keep WAL forever); ``start()`` first drops
the slots that runs on this machine left when they died (see
:func:`_drop_abandoned_slots`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPLICATION_LINE = "host replication all 127.0.0.1/32 trust"
#: The replication slots of the standbys of this suite: the prefix, this machine's
#: tag, then the run's pid.
SLOT_PREFIX = "dynroute_standby_"
MACHINE = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def slot_name(pid: int) -> str:
    """The name of the slot of the standby of run ``pid`` on this machine."""
    return f"{SLOT_PREFIX}{MACHINE}_{pid}"


class StandbyError(Exception):
    """The standby could not be started; the message says which step failed and why."""


@dataclass
class Standby:
    """A running standby: its port, its data directory and how to stop and start it."""

    port: int
    directory: Path
    pg_ctl: str
    slot: str

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are closed)."""
        _as_postgres([self.pg_ctl, "-D", str(self.directory / "data"), "stop", "-m", "fast", "-w"])

    def start(self) -> None:
        """Start the server again and wait until it accepts connections."""
        _as_postgres(
            [
                self.pg_ctl,
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "log"),
                "start",
                "-w",
            ]
        )

    def remove(self, primary_cursor: Any) -> None:
        """Stop the server if it runs, delete its directory, drop its slot on the primary."""
        with contextlib.suppress(StandbyError):  # already stopped
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        primary_cursor.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [self.slot],
        )


def start(primary: dict[str, Any], cursor: Any) -> Standby:
    """Start a standby of the server in ``primary`` (Django settings); ``cursor`` is on it.

    Raises:
        StandbyError: A step failed (no ``postgres`` user, no PostgreSQL binaries, no
            permission to allow replication, the backup or the start failed).
    """
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        msg = "there is no 'postgres' system user to run a standby as"
        raise StandbyError(msg) from None
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        msg = "starting a standby needs root or the postgres user"
        raise StandbyError(msg)
    cursor.execute("SHOW server_version_num")
    major = int(cursor.fetchone()[0]) // 10000
    debian = Path(f"/usr/lib/postgresql/{major}/bin/pg_ctl")
    pg_ctl = str(debian) if debian.exists() else shutil.which("pg_ctl") or ""
    if not pg_ctl:
        raise StandbyError(f"no pg_ctl for PostgreSQL {major} (looked in /usr/lib/postgresql)")
    pg_basebackup = str(Path(pg_ctl).with_name("pg_basebackup"))
    _allow_replication(cursor)
    _drop_abandoned_slots(cursor)
    directory = Path(tempfile.mkdtemp(prefix="dynroute-standby-"))
    shutil.chown(directory, "postgres")
    port = _free_port()
    standby = Standby(port, directory, pg_ctl, slot_name(os.getpid()))
    try:
        _as_postgres(
            [
                pg_basebackup,
                "-h",
                str(primary["HOST"] or "127.0.0.1"),
                "-p",
                str(primary["PORT"] or 5432),
                "-U",
                str(primary["USER"] or "postgres"),
                "-D",
                str(directory / "data"),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--create-slot",
                "--slot",
                standby.slot,
            ]
        )
        # Debian keeps the server's configuration outside its data directory: give
        # the standby its own.
        data = directory / "data"
        (data / "postgresql.conf").write_text(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{directory}'\nhot_standby = on\n"
        )
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        for name in ("postgresql.conf", "pg_hba.conf"):
            shutil.chown(data / name, "postgres")
        standby.start()
    except BaseException:
        standby.remove(cursor)
        raise
    return standby


def wait_for_replay(primary_cursor: Any, standby_cursor: Any, *, seconds: float = 90) -> None:
    """Wait until the standby has replayed everything the primary committed so far."""
    primary_cursor.execute("SELECT pg_current_wal_lsn()")
    target = primary_cursor.fetchone()[0]
    deadline = time.monotonic() + seconds
    while True:
        standby_cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
        if standby_cursor.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise StandbyError(f"the standby did not replay up to {target} in {seconds} s")
        time.sleep(0.01)


def _drop_abandoned_slots(cursor: Any) -> None:
    """Drop this suite's slots left by runs on this machine that have ended.

    "Not active" is not enough: a slot is inactive between pg_basebackup creating it
    and the standby's start, and while a test stops the standby; a concurrent run
    that dropped it then would break that run's standby ("requested WAL segment ...
    has already been removed"). A slot is dropped only if its run (the pid in its
    name) is gone from this machine; other machines' slots are left to their runs.
    Slots named by earlier versions (no machine tag) count as this machine's.
    """
    cursor.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s AND NOT active",
        [SLOT_PREFIX.replace("_", r"\_") + "%"],
    )
    for (name,) in cursor.fetchall():
        *machine, pid = name.removeprefix(SLOT_PREFIX).split("_")
        if machine not in ([], [MACHINE]) or not pid.isdigit() or running(int(pid)):
            continue
        cursor.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            [name],
        )


def running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _allow_replication(cursor: Any) -> None:
    cursor.execute("SHOW hba_file")
    hba = Path(cursor.fetchone()[0])
    try:
        lines = hba.read_text().splitlines()
    except OSError as error:
        raise StandbyError(f"cannot read {hba} to allow replication: {error}") from None
    if any(line.split() == REPLICATION_LINE.split() for line in lines):
        return
    try:
        with hba.open("a") as file:
            file.write(f"\n{REPLICATION_LINE}\n")
    except OSError as error:
        msg = f"cannot add {REPLICATION_LINE!r} to {hba}: {error}"
        raise StandbyError(msg) from None
    cursor.execute("SELECT pg_reload_conf()")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(command: list[str]) -> None:
    tool = Path(command[0]).name
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603 - PostgreSQL's own tools
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise StandbyError(f"{tool} failed ({done.returncode}): {output}")
