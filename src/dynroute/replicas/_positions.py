"""Positions: how far a primary has written and a replica has replayed, and replica lag.

Read-your-writes by position (``PrimaryReplica(pin="position")``): after code writes to
a primary, the primary's position is read once (:func:`written`): PostgreSQL's
``pg_current_wal_insert_lsn()`` (at or past the commit record of every transaction
committed before the call), MariaDB's ``@@gtid_binlog_pos`` (the last GTID of each
replication domain in its binary log: every committed transaction, this session's
among them). Later reads that need that position (:data:`NEEDS`, set by the request
middleware from its cookie and by the Celery integration from a task's headers) go to
a replica only once *that* replica has replayed it (:func:`reached`), else to the
primary.

What a replica has replayed is cached with the connection it was read on
(:func:`known`): positions only move forward, so a cached one that already covers
what a read needs settles it with no query; one that is behind is asked again, once
per entry of a block. Per connection, not per alias: an alias may reach several
servers (a proxy in front of replicas, a DNS name moved in a failover), and what one
of them replayed says nothing of another; a new connection starts with nothing.

Failover and re-cloned replicas: a PostgreSQL position carries its cluster's
``system_identifier``; a replica of another cluster (a new primary built from
scratch, a replica re-cloned from it) never covers it, so those reads go to the
primary. A cached position never outlives the connection it was read on, so never
the server (a restart, which a re-clone or a restore implies, breaks it); an answer
behind the cached one is believed (the cache is replaced, not kept at its maximum).
On MariaDB, GTIDs are compared per replication domain by sequence number, which
``gtid_strict_mode`` keeps increasing across a failover.

Lag (``PrimaryReplica(max_lag=...)``): :func:`check_lag` asks a replica, in one query,
how far behind it is: zero when it has replayed everything it has received (so an
idle primary never makes its replicas look late); else PostgreSQL's age of the last
replayed transaction, MariaDB's ``Seconds_Behind_Master`` (or, with its SQL thread
stopped and transactions waiting, "stopped": not chosen).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeAlias, cast, final

from dynroute import _switches, observe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = [
    "LAGGING",
    "NEEDS",
    "PRIMARY_ONLY",
    "Gtids",
    "Lsn",
    "Needing",
    "Needs",
    "Pin",
    "Position",
    "by_time",
    "check_lag",
    "claim_lag_checks",
    "describe",
    "dump",
    "forget",
    "known",
    "lag_due",
    "lagging",
    "load",
    "pack",
    "reached",
    "replayed",
    "supports",
    "unpack",
    "written",
]

logger = logging.getLogger("dynroute")


@final
class Lsn(NamedTuple):
    """A PostgreSQL position: a WAL location of one cluster."""

    system: int
    """The cluster's ``system_identifier``: a standby shares its primary's."""
    lsn: int
    """The WAL location, ``X/Y`` as ``X << 32 | Y``."""


@final
class Gtids(NamedTuple):
    """A MariaDB position: the last GTID of each replication domain."""

    seqs: tuple[tuple[int, int, int], ...]
    """``(domain, server_id, sequence)`` per domain, sorted by domain."""


#: How reads are kept on the primary after a write: until a replica has replayed it
#: (``"position"``), or for a time (``"time"``: the middleware's ``pin_seconds``).
Pin: TypeAlias = "Literal['position', 'time']"

#: Where a primary had written: a read that needs it waits for a replica to replay it.
Position: TypeAlias = Lsn | Gtids

#: In :data:`NEEDS`: reads of this primary go to it, whatever a replica has replayed
#: (a write whose position is not known: a backend without positions, a time pin).
PRIMARY_ONLY: Final = Lsn(-1, -1)

#: The positions each primary's reads need here, by primary alias.
Needs: TypeAlias = "Mapping[str, Position]"

#: What this code's reads need, by primary: set by the request middleware (from its
#: cookie) and by the Celery integration (from a task's headers) around the code they
#: run; read when a PrimaryReplica block is entered. ``None``: nothing.
NEEDS: ContextVar[Needs | None] = ContextVar("dynroute_needs", default=None)

#: The attribute of a Django connection object holding what was read on its current
#: DB-API connection: ``(generation, that connection, system identifier, replayed)``.
_SEEN: Final = "_dynroute_positions"
_Seen: TypeAlias = "tuple[int, object, int | None, Position | None]"  # noqa: PYI047 - in annotations
#: Bumped by :func:`forget`: what was cached before is ignored.
_generation = 0

#: Replicas found lagging past their policy's ``max_lag``: alias -> its lag (seconds,
#: ``inf`` when replication is stopped with transactions waiting).
LAGGING: dict[str, float] = {}
#: When each replica's lag is to be asked next (``time.monotonic()``), by alias.
_NEXT_CHECK: dict[str, float] = {}
_LAG_LOCK = threading.Lock()

_VENDORS: Final = frozenset({"postgresql", "mysql"})

# A server's system_identifier is asked with the first position read on a connection.
_PG_SYSTEM: Final = ", (SELECT system_identifier::text FROM pg_control_system())"
_PG_WRITTEN: Final = "SELECT pg_current_wal_insert_lsn()::text"
# A standby: what it replayed; a server not in recovery (a promoted standby, or a
# "replica" alias that names a primary): what it wrote, which it has.
_PG_REPLAYED: Final = (
    "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END)::text"
)
# Behind only while something received is not replayed: an idle primary leaves its
# standby fully replayed, at lag 0, however old its last transaction. Behind with no
# transaction replayed since it started: how far is not known, so without bound.
# clock_timestamp(), not now(): the connection may be inside a transaction.
_PG_LAG: Final = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() "
    "OR COALESCE(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), false) THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), "
    "'Infinity') END::float"
)


def supports(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection``'s backend has positions (PostgreSQL, MariaDB)."""
    vendor = connection.vendor
    if vendor == "mysql":
        return bool(getattr(connection, "mysql_is_mariadb", False))
    return vendor in _VENDORS


def written(connection: BaseDatabaseWrapper) -> Position:
    """Return the primary's position now, in one query (past every committed write)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            system, lsn = _pg_position(connection, cursor, _PG_WRITTEN)
            return Lsn(system, _lsn(lsn or "0/0"))
        cursor.execute("SELECT @@gtid_binlog_pos")
        return _gtids(cursor.fetchone()[0])


def replayed(connection: BaseDatabaseWrapper) -> Position:
    """Ask the replica what it has replayed, in one query; cache it with the connection."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            system, lsn = _pg_position(connection, cursor, _PG_REPLAYED)
            position: Position = Lsn(system, _lsn(lsn) if lsn else 0)
            _remember(connection, system, position)
        else:
            # The applied GTIDs, whether replicated (gtid_slave_pos) or written there.
            cursor.execute("SELECT @@gtid_current_pos")
            position = _gtids(cursor.fetchone()[0])
            _remember(connection, None, position)
    return position


def known(connection: BaseDatabaseWrapper) -> Position | None:
    """What the replica behind ``connection`` had replayed when last asked on it, if it was."""
    seen = _seen(connection)
    return None if seen is None else seen[3]


def _seen(
    connection: BaseDatabaseWrapper,
) -> tuple[int, object, int | None, Position | None] | None:
    """What was read on ``connection``'s current DB-API connection, if anything."""
    seen: tuple[int, object, int | None, Position | None] | None = connection.__dict__.get(_SEEN)
    raw = connection.connection
    if seen is None or raw is None or seen[1] is not raw or seen[0] != _generation:
        return None
    return seen


def _remember(
    connection: BaseDatabaseWrapper, system: int | None, position: Position | None
) -> None:
    connection.__dict__[_SEEN] = (_generation, connection.connection, system, position)


def _pg_position(
    connection: BaseDatabaseWrapper,
    cursor: Any,  # noqa: ANN401 - a DB-API cursor
    query: str,
) -> tuple[int, str | None]:
    """Run ``query`` (a position); with the server's system identifier if not known yet."""
    seen = _seen(connection)
    if seen is not None and seen[2] is not None:
        cursor.execute(query)
        return seen[2], cursor.fetchone()[0]
    cursor.execute(query + _PG_SYSTEM)
    lsn, identifier = cursor.fetchone()
    system = int(identifier)
    _remember(connection, system, None if seen is None else seen[3])
    return system, lsn


def reached(replayed: Position | None, needed: Position) -> bool:
    """Whether a replica that has replayed ``replayed`` has ``needed``'s writes."""
    if replayed is None or needed is PRIMARY_ONLY:
        return False
    if type(needed) is Lsn:
        return (
            type(replayed) is Lsn
            and replayed.system == needed.system
            and (replayed.lsn >= needed.lsn)
        )
    if type(replayed) is not Gtids:
        return False
    applied = {domain: sequence for domain, _, sequence in replayed.seqs}
    return all(applied.get(domain, -1) >= sequence for domain, _, sequence in needed.seqs)


def by_time(position: Position) -> bool:
    """Whether ``position`` is :data:`PRIMARY_ONLY`: a write carried as a time pin."""
    return position is PRIMARY_ONLY


def dump(position: Position) -> str:
    """The text of ``position`` for a cookie or a task's headers (letters, digits, ``.-_``)."""
    if type(position) is Lsn:
        return "p" if position is PRIMARY_ONLY else f"pg.{position.system:x}.{position.lsn:x}"
    return "gtid." + "_".join(f"{d}-{s}-{q}" for d, s, q in position.seqs)


def describe(position: Position | None) -> str:
    """Say ``position`` as its server does (``0/1D008158``, ``0-1-42``), for people."""
    if position is None:
        return "a position not asked yet"
    if type(position) is Lsn:
        if position is PRIMARY_ONLY:
            return "the primary's latest write"
        return f"{position.lsn >> 32:X}/{position.lsn & 0xFFFFFFFF:X}"
    return ",".join(f"{d}-{s}-{q}" for d, s, q in position.seqs) or "no GTID"


def load(text: object) -> Position | None:
    """Read what :func:`dump` wrote; ``None`` for anything else."""
    if not isinstance(text, str):
        return None
    if text == "p":
        return PRIMARY_ONLY
    kind, _, rest = text.partition(".")
    try:
        if kind == "pg":
            system, lsn = rest.split(".")
            return Lsn(int(system, 16), int(lsn, 16))
        if kind == "gtid":
            return _gtids(rest.replace("_", ","))
    except ValueError:
        return None
    return None


def pack(needs: Needs) -> str:
    """The text of ``needs`` for a cookie or a task's headers: base64 of JSON, URL-safe."""
    data = json.dumps({alias: dump(position) for alias, position in needs.items()})
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def unpack(text: object) -> dict[str, Position] | None:
    """Read what :func:`pack` wrote; ``None`` if it is not that (nothing is trusted)."""
    if not isinstance(text, str):
        return None
    try:
        data: object = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    needs: dict[str, Position] = {}
    entries = cast("dict[object, object]", data)  # JSON: checked one by one below
    for alias, value in entries.items():
        position = load(value)
        if not isinstance(alias, str) or position is None:
            return None
        needs[alias] = position
    return needs


@final
class Needing:
    """Make the PrimaryReplica blocks entered inside need ``needs`` (one use, not reentrant)."""

    __slots__ = ("_needs", "_token")

    def __init__(self, needs: Needs) -> None:
        self._needs = needs
        self._token: Token[Needs | None] | None = None

    def __enter__(self) -> None:
        """Add ``needs`` to what is needed here (a later position of a primary wins)."""
        current = NEEDS.get()
        self._token = NEEDS.set(self._needs if current is None else {**current, **self._needs})

    def __exit__(self, *exc_info: object) -> None:
        """Restore what was needed before."""
        if self._token is not None:
            NEEDS.reset(self._token)
            self._token = None


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


def _gtids(text: str | None) -> Gtids:
    """Parse a MariaDB GTID list (``0-1-42,1-2-7``); raise ``ValueError`` if malformed."""
    seqs: list[tuple[int, int, int]] = []
    for gtid in (text or "").split(","):
        if gtid.strip():
            domain, server, sequence = (int(part) for part in gtid.strip().split("-"))
            seqs.append((domain, server, sequence))
    return Gtids(tuple(sorted(seqs)))


def forget() -> None:
    """Forget every position cached and every replica's lag; for tests and operators."""
    global _generation  # noqa: PLW0603 - read by _seen
    with _LAG_LOCK:
        _generation += 1
        LAGGING.clear()
        _NEXT_CHECK.clear()


# Lag.


def lagging() -> Mapping[str, float]:
    """The replicas found lagging past ``max_lag`` in this process, with their lag."""
    return LAGGING


def lag_due(replicas: tuple[str, ...]) -> bool:
    """Whether the lag of one of ``replicas`` is to be asked (a dict lookup per replica)."""
    now = time.monotonic()
    return any(_NEXT_CHECK.get(alias, 0.0) <= now for alias in replicas)


def claim_lag_checks(replicas: tuple[str, ...], every: float) -> list[str]:
    """Take the replicas whose lag is due; the next check of each is ``every`` from now.

    One caller per process takes each: the others see it as checked.
    """
    now = time.monotonic()
    with _LAG_LOCK:
        due = [alias for alias in replicas if _NEXT_CHECK.get(alias, 0.0) <= now]
        for alias in due:
            _NEXT_CHECK[alias] = now + every
    return due


def check_lag(connection: BaseDatabaseWrapper, max_lag: float, sender: type) -> bool:
    """Ask the replica its lag, in one query; note and report a change. Return if it lags."""
    alias = connection.alias
    lag = _lag(connection)
    late = lag > max_lag
    with _LAG_LOCK:
        was = alias in LAGGING
        if late:
            LAGGING[alias] = lag
        else:
            LAGGING.pop(alias, None)
    if late and not was:
        logger.warning(
            "dynroute: replica %r is %s behind (max_lag %g s): reads go elsewhere",
            alias,
            _seconds(lag),
            max_lag,
        )
        if _switches.listening:
            observe.replica_lagging.send_robust(sender=sender, alias=alias, lag=lag)
    elif was and not late:
        logger.warning("dynroute: replica %r has caught up (%s behind)", alias, _seconds(lag))
        if _switches.listening:
            observe.replica_caught_up.send_robust(sender=sender, alias=alias, lag=lag)
    return late


def _seconds(lag: float) -> str:
    return (
        "stopped with transactions waiting, so without bound"
        if lag == float("inf")
        else (f"{lag:.1f} s")
    )


def _lag(connection: BaseDatabaseWrapper) -> float:
    """The replica's lag in seconds (``inf``: replication stopped, transactions waiting)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_LAG)
            return float(cursor.fetchone()[0])
        cursor.execute("SHOW SLAVE STATUS")
        row = cursor.fetchone()
        if row is None:
            return 0.0  # not a replica: nothing to replay
        status = dict(zip((column[0] for column in cursor.description), row, strict=True))
    # Applied all it received (the SQL thread's place in the primary's binary log is
    # the IO thread's): not behind, however idle the primary.
    if (status["Relay_Master_Log_File"], status["Exec_Master_Log_Pos"]) == (
        status["Master_Log_File"],
        status["Read_Master_Log_Pos"],
    ):
        return 0.0
    behind = status["Seconds_Behind_Master"]  # NULL while its SQL thread is stopped
    return float("inf") if behind is None else float(behind)
