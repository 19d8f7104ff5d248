"""A real MariaDB primary and its GTID replica, on ports of their own, for MariaDB tests.

``start()`` creates a data directory with ``mariadb-install-db`` in a temporary
directory, copies it for the replica, and starts two ``mariadbd`` on free ports of
127.0.0.1 (DJANGO_NOTES §14). The primary writes a ROW binary log; the replica follows
it by GTID (``MASTER_USE_GTID=slave_pos``) and is ``read_only`` (``root`` may still
write on it: do not, a row the primary does not have stops replication when the
primary's own arrives). ``root`` connects over TCP without a password on both. The
server on 3306 is left alone: neither server reads an option file (``--no-defaults``),
so none of its port, socket, pid file or data directory. Everything ``start()``
starts, ``Pair.remove()`` stops and deletes; ``start()`` first removes the pairs that
runs on this machine left when they died (see :func:`_remove_abandoned`).

``Pair.pause()`` stops the replica's SQL thread: the replica keeps receiving the
primary's transactions but applies none of them (a deterministic lag, like
``pg_wal_replay_pause()``); ``Pair.resume()`` starts it again.

The replica has no binary log of its own: its ``@@gtid_slave_pos`` (what
``MASTER_GTID_WAIT`` checks) is all it needs, and a stray write on it then cannot
put a GTID of its own in the way of the primary's (``gtid_strict_mode`` would stop
replication on it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.standby import running

#: The temporary directories of the pairs: ``tempfile.mkdtemp`` adds a random tail.
PREFIX = "dynroute-mariadb-"
#: In a pair's directory: the pid of the run that started it.
OWNER = "owner"
#: The servers of a pair; each has ``NAME`` (its data directory), ``NAME.log`` (its
#: output: errors, and why it did not start), ``NAME.sock`` and ``NAME.process`` (the
#: pid of its ``mariadbd``, for :func:`_remove_abandoned`).
SERVERS = ("primary", "replica")
SERVER_IDS = {"primary": 1, "replica": 2}
#: How long a server may take to accept connections, and the replica to connect.
START_SECONDS = 30.0
#: Small servers: they hold a few test tables, and start faster that way.
SIZES = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M")
#: Both servers; ``--no-defaults`` must come first.
COMMON = (
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--gtid-strict-mode=ON",
    "--innodb-flush-log-at-trx-commit=2",  # test data: no fsync per commit
    *SIZES,
)
ROLES = {
    "primary": ("--log-bin=primary-bin", "--binlog-format=ROW"),
    "replica": ("--read-only=ON",),
}


class PairError(Exception):
    """The pair could not be started or used; the message says which step failed and why."""


@dataclass
class Pair:
    """A running primary and replica: their ports, their directory, how to drive them."""

    primary_port: int
    replica_port: int
    directory: Path
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def port(self, server: str) -> int:
        """The port of ``server`` ("primary" or "replica")."""
        return {"primary": self.primary_port, "replica": self.replica_port}[server]

    def pause(self) -> None:
        """Stop applying on the replica (``STOP SLAVE SQL_THREAD``); it keeps receiving."""
        self.query("replica", "STOP SLAVE SQL_THREAD")

    def resume(self) -> None:
        """Apply again on the replica (``START SLAVE SQL_THREAD``)."""
        self.query("replica", "START SLAVE SQL_THREAD")

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Wait until the replica has applied every transaction the primary has logged.

        That is, until its ``@@gtid_slave_pos`` covers the primary's
        ``@@gtid_binlog_pos`` (``MASTER_GTID_WAIT`` on the replica).

        Raises:
            PairError: It had not after ``timeout`` seconds (paused, or its SQL thread
                stopped on an error: the message gives ``SHOW SLAVE STATUS``'s).
        """
        ((position,),) = self.query("primary", "SELECT @@gtid_binlog_pos")
        ((waited,),) = self.query("replica", "SELECT MASTER_GTID_WAIT(%s, %s)", [position, timeout])
        if waited != 0:
            ((applied,),) = self.query("replica", "SELECT @@gtid_slave_pos")
            status = self.replica_status()
            raise PairError(
                f"the replica did not apply up to {position!r} in {timeout} s: it applied "
                f"{applied!r}, Slave_SQL_Running="
                f"{status.get('Slave_SQL_Running')}, Last_SQL_Error="
                f"{status.get('Last_SQL_Error')!r}, Last_IO_Error={status.get('Last_IO_Error')!r}"
            )

    def replica_status(self) -> dict[str, Any]:
        """``SHOW SLAVE STATUS`` on the replica, by column name."""
        with contextlib.closing(_connect(self.replica_port, step="SHOW SLAVE STATUS")) as db:
            cursor = db.cursor()
            cursor.execute("SHOW SLAVE STATUS")
            row = cursor.fetchone()
            names = [column[0] for column in cursor.description or ()]
        return dict(zip(names, row or (), strict=False))

    def query(self, server: str, sql: str, args: Any = None) -> tuple[tuple[Any, ...], ...]:
        """Run ``sql`` on ``server`` ("primary" or "replica") as root; its rows, if any."""
        with contextlib.closing(_connect(self.port(server), step=f"{sql} on the {server}")) as db:
            cursor = db.cursor()
            try:
                cursor.execute(sql, args)
            except _mysqldb().Error as error:
                raise PairError(f"{sql} on the {server} failed: {error}") from None
            return tuple(cursor.fetchall())

    def stop(self, server: str = "replica") -> None:
        """Stop ``server`` (SIGTERM: a normal shutdown) and wait for it to end."""
        process = self._processes.pop(server, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start(self, server: str = "replica") -> None:
        """Start ``server`` again (on its port) and wait until it accepts connections.

        A restarted replica resumes replication by itself (its SQL thread too, even
        if it was paused when it stopped).
        """
        if server in self._processes and self._processes[server].poll() is None:
            return
        self._launch(server)
        self._wait_ready(server)

    def remove(self) -> None:
        """Stop both servers if they run and delete the pair's directory; idempotent."""
        for server in reversed(SERVERS):
            self.stop(server)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _launch(self, server: str) -> None:
        directory = self.directory
        command = [
            _mariadbd(),
            "--no-defaults",
            *_user(),
            f"--datadir={directory / server}",
            f"--port={self.port(server)}",
            f"--socket={directory / server}.sock",
            f"--pid-file={directory / server}.pid",
            f"--server-id={SERVER_IDS[server]}",
            *COMMON,
            *ROLES[server],
        ]
        with (directory / f"{server}.log").open("ab") as log:
            try:
                process = subprocess.Popen(  # noqa: S603 - MariaDB's own server
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                raise PairError(f"mariadbd for the {server} could not run: {error}") from None
        self._processes[server] = process
        (directory / f"{server}.process").write_text(f"{process.pid}\n")

    def _wait_ready(self, server: str, *, rebind: int = 0) -> None:
        """Wait until ``server`` accepts connections.

        If it could not listen on its port (another process took it after
        :func:`_free_ports` let it go), it starts again on another one, ``rebind``
        times at most: only in ``start()``, before the replica is pointed at the primary.
        """
        process = self._processes[server]
        port = self.port(server)
        mysqldb = _mysqldb()
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                if rebind and "Address already in use" in self._log_tail(server, 3):
                    (port,) = _free_ports(1)
                    setattr(self, f"{server}_port", port)
                    self._launch(server)
                    self._wait_ready(server, rebind=rebind - 1)
                    return
                msg = (
                    f"mariadbd for the {server} exited ({process.returncode}) while "
                    f"starting on port {port}: {self._log_tail(server)}"
                )
                raise PairError(msg)
            try:
                mysqldb.connect(
                    host="127.0.0.1", port=port, user="root", password="", connect_timeout=2
                ).close()
            except mysqldb.OperationalError as error:
                last = error
            else:
                return
            if time.monotonic() > deadline:
                msg = (
                    f"the {server} did not accept connections on port {port} in "
                    f"{START_SECONDS} s ({last}): {self._log_tail(server)}"
                )
                raise PairError(msg)
            time.sleep(0.01)

    def _replicate(self) -> None:
        """Point the replica at the primary, start it, wait until it is connected."""
        self.query(
            "replica",
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', "
            f"MASTER_PORT={int(self.primary_port)}, MASTER_USER='root', "
            "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
        )
        self.query("replica", "START SLAVE")
        deadline = time.monotonic() + START_SECONDS
        while True:
            status = self.replica_status()
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes":
                return
            if time.monotonic() > deadline:
                msg = (
                    f"the replica did not connect to the primary in {START_SECONDS} s: "
                    f"Slave_IO_Running={status.get('Slave_IO_Running')}, Last_IO_Error="
                    f"{status.get('Last_IO_Error')!r}, Slave_SQL_Running="
                    f"{status.get('Slave_SQL_Running')}, Last_SQL_Error="
                    f"{status.get('Last_SQL_Error')!r}"
                )
                raise PairError(msg)
            time.sleep(0.01)

    def _log_tail(self, server: str, lines: int = 15) -> str:
        try:
            text = (self.directory / f"{server}.log").read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def start() -> Pair:
    """Start a primary and its replica; ``Pair.remove()`` stops and deletes them.

    Raises:
        PairError: A step failed (no MariaDB server or mysqlclient installed,
            ``mariadb-install-db`` failed, a server did not start, the replica did not
            connect); the message names the step and gives the server's log.
    """
    _mysqldb()
    _mariadbd()
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not install_db:
        msg = "no mariadb-install-db on PATH (is the MariaDB server installed?)"
        raise PairError(msg)
    _remove_abandoned()
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    (directory / OWNER).write_text(f"{os.getpid()}\n")
    primary_port, replica_port = _free_ports(2)
    pair = Pair(primary_port, replica_port, directory)
    try:
        _run(
            [
                install_db,
                "--no-defaults",
                *_user(),
                f"--datadir={directory / 'primary'}",
                "--auth-root-authentication-method=normal",  # root@127.0.0.1, no password
                "--skip-test-db",
                "--skip-name-resolve",
                *SIZES,
            ]
        )
        # The same empty server twice: a copy is quicker than a second install.
        shutil.copytree(directory / "primary", directory / "replica", symlinks=True)
        for server in SERVERS:  # both start at once
            pair._launch(server)
        for server in SERVERS:
            pair._wait_ready(server, rebind=3)
        pair._replicate()
    except BaseException:
        pair.remove()
        raise
    return pair


def _remove_abandoned() -> None:
    """Stop and delete the pairs whose run (the pid in ``owner``) is gone from this machine.

    A run killed before its ``remove()`` leaves its servers running (they have
    sessions of their own). Only a process whose command line names the pair's
    directory is killed: its pid may have gone to another process since.
    """
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((directory / OWNER).read_text())
        except (OSError, ValueError):
            continue  # being created, or not a pair
        if running(owner):
            continue
        for server in SERVERS:
            _kill(directory, server)
        shutil.rmtree(directory, ignore_errors=True)


def _kill(directory: Path, server: str) -> None:
    try:
        pid = int((directory / f"{server}.process").read_text())
    except (OSError, ValueError):
        return
    if not _runs_in(pid, directory):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _runs_in(pid, directory) and time.monotonic() < deadline:
        time.sleep(0.01)


def _runs_in(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` runs (not a zombie) with ``directory`` in its command line."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(directory).encode() in command


def _free_ports(count: int) -> list[int]:
    """``count`` different free ports of 127.0.0.1 (the probes are held until all bound)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def _user() -> list[str]:
    """``--user=root`` when root (mariadbd refuses root otherwise); others run as themselves."""
    return ["--user=root"] if os.geteuid() == 0 else []


def _mariadbd() -> str:
    found = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/libexec")
    if not found:
        msg = "no mariadbd on PATH or in /usr/sbin (is the MariaDB server installed?)"
        raise PairError(msg)
    return found


def _mysqldb() -> Any:
    try:
        import MySQLdb  # noqa: PLC0415 - only the MariaDB runs install mysqlclient
    except ImportError as error:
        raise PairError(f"mysqlclient is not installed: {error}") from None
    return MySQLdb


def _connect(port: int, *, step: str) -> Any:
    mysqldb = _mysqldb()
    try:
        return mysqldb.connect(
            host="127.0.0.1", port=port, user="root", password="", autocommit=True
        )
    except mysqldb.Error as error:
        raise PairError(f"{step}: cannot connect to 127.0.0.1:{port}: {error}") from None


def _run(command: list[str]) -> None:
    tool = Path(command[0]).name
    try:
        done = subprocess.run(  # noqa: S603 - MariaDB's own tools
            command, capture_output=True, text=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PairError(f"{tool} failed: {error}") from None
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise PairError(f"{tool} failed ({done.returncode}): {output}")
