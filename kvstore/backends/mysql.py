"""MySQL / MariaDB through aiomysql.

MySQL has no ``RETURNING``, so each reporting write is sent as two statements in one round
trip: the write, which stores the values it sets in session variables, then
``SELECT ROW_COUNT(), @kv_ttl, @kv_version``. MariaDB 10.5 and later accept ``INSERT …
RETURNING``: there the unconditional PUT is one statement (detected when the node opens).
The upsert is ``INSERT … ON DUPLICATE KEY UPDATE`` with every assignment guarded by "the old
row is dead"; ``ttl`` is assigned last because MySQL evaluates the assignments left to right
against the partly updated row.
``REPLACE INTO`` is no option: it deletes and re-inserts, so it cannot keep a live row and
report that it did (needed for ``If-None-Match: *``) nor continue a version lineage.

Keys are ``VARBINARY``: MySQL's text collations are case-insensitive or pad trailing spaces,
either of which would make two different keys collide.

A DSN may name several hosts: the nodes of a Galera cluster, in the order writes should prefer.
A node connects to the host it used last and moves to the next one only when that one cannot
be reached or is not ready (``wsrep_ready``), so a front end writes to one Galera node at a time
and its writes never conflict in certification. On a Galera node, replica state is the node's own
(``wsrep_local_state``), not ``SHOW SLAVE STATUS``.
"""

import functools
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomysql
import pymysql

from kvstore.backends.base import INTEGER_PATTERN, PERSISTENT_TTL, RING_STATE, Put, ReplicaState, Row
from kvstore.backends.dsn import dsn_hosts
from kvstore.backends.server import ServerNode
from kvstore.backends.sql import (
    RING_EPOCH,
    Dialect,
    Params,
    PoolSettings,
    Statements,
    WriteTemplates,
    put_params,
    values_rows,
)
from kvstore.errors import ShardTimeout, describe

DIALECT = Dialect(
    name="mysql",
    begin="START TRANSACTION",
    key_column="`key`",
    now_ms="CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    now_us="CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)",
    greatest="GREATEST",
    placeholder="%s",
    keep_on_conflict="ON DUPLICATE KEY UPDATE {column} = {column}",  # INSERT IGNORE would hide real errors
    replace_on_conflict="ON DUPLICATE KEY UPDATE value = VALUES(value), ttl = VALUES(ttl),"
    " version = VALUES(version), sweep_slot = VALUES(sweep_slot)",
    epoch_row=f"(SELECT COALESCE({RING_EPOCH}, 0) AS ring_epoch) ring",
    replication_position="SELECT @@gtid_binlog_pos",
    has_replayed="SELECT MASTER_GTID_WAIT(?, 0) = 0",
    replica_state="SELECT MASTER_GTID_WAIT(?, 0) = 0",  # + SHOW SLAVE STATUS, in MySQLNode.replica_state
    # InnoDB's estimate; it has none for rows with a sweep slot (the index's cardinality counts NULLs too).
    table_stats="SELECT TABLE_ROWS, NULL, 0 FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'store'",
    schema=(
        "CREATE TABLE IF NOT EXISTS store (`key` VARBINARY(1020) NOT NULL PRIMARY KEY,"
        " value LONGBLOB NOT NULL, ttl BIGINT NOT NULL, version BIGINT NOT NULL, sweep_slot BIGINT NULL,"
        " INDEX store_sweep_slot (sweep_slot)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS kvstore_meta (name VARCHAR(64) NOT NULL PRIMARY KEY,"
        " value VARCHAR(255) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS kvstore_state (name VARCHAR(64) NOT NULL PRIMARY KEY,"
        " epoch BIGINT NOT NULL, value MEDIUMTEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        # The fence (sql.py). DETERMINISTIC with a literal argument: evaluated once, as a constant,
        # so keys are still looked up by index. The shared lock on the ring entry is held until the
        # statement commits: a new epoch (an exclusive lock) waits for fenced statements in flight,
        # and ones that start after it read the new epoch.
        "CREATE OR REPLACE FUNCTION kvstore_fence(routed BIGINT) RETURNS BIGINT DETERMINISTIC READS SQL DATA"
        " BEGIN DECLARE current BIGINT DEFAULT 0; IF routed IS NULL THEN RETURN 0; END IF;"
        f" SELECT epoch INTO current FROM kvstore_state WHERE name = '{RING_STATE}' LOCK IN SHARE MODE;"
        " IF current <> routed THEN SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 4409,"
        " MESSAGE_TEXT = 'stale ring epoch'; END IF; RETURN 0; END",
    ),
    indexes=(),  # MySQL has no partial indexes and no CREATE INDEX IF NOT EXISTS: it is in the table
    claim_schema_version="INSERT INTO kvstore_meta (name, value) VALUES ('schema_version', %s)"
    " ON DUPLICATE KEY UPDATE name = name",  # INSERT IGNORE would raise a warning when it exists
)
_REPORT = "; SELECT ROW_COUNT(), @kv_ttl, @kv_version"
_DEAD = "ttl <= {now_ms}"
WRITES = WriteTemplates(
    replace=(
        "UPDATE store SET value = ?, ttl = (@kv_ttl := CAST({expiry} AS SIGNED)),"
        " version = (@kv_version := {next_version}), sweep_slot = {slot}"
        " WHERE {key} = {key_param} AND ttl > {now_ms}{check}{fence}" + _REPORT
    ),
    create=(
        "INSERT INTO store ({key}, value, ttl, version, sweep_slot)"
        " VALUES (?, ?, (@kv_ttl := CAST({expiry} AS SIGNED)), (@kv_version := {now_us} + {fence_term}), ?)"
        f" ON DUPLICATE KEY UPDATE value = IF({_DEAD}, VALUES(value), value),"
        f" version = IF({_DEAD}, (@kv_version := {{greatest}}(version + 1, VALUES(version))), version),"
        f" sweep_slot = IF({_DEAD}, VALUES(sweep_slot), sweep_slot),"
        f" ttl = IF({_DEAD}, VALUES(ttl), ttl)" + _REPORT
    ),
    # One round trip like every write here; liveness of the replaced row is captured (in a term
    # multiplied by 0) before ttl, assigned last, changes. ROW_COUNT() is 1 for an insert.
    upsert=(
        "INSERT INTO store ({key}, value, ttl, version, sweep_slot)"
        " VALUES (?, ?, (@kv_ttl := CAST({expiry} AS SIGNED)), (@kv_version := {now_us} + {fence_term}), ?)"
        " ON DUPLICATE KEY UPDATE value = VALUES(value),"
        " version = (@kv_version := {greatest}(version + 1, VALUES(version))) + 0 * (@kv_live := ttl > {now_ms}),"
        " sweep_slot = IF(VALUES(sweep_slot) IS NULL, NULL, COALESCE(sweep_slot, VALUES(sweep_slot))),"
        " ttl = VALUES(ttl); SELECT ROW_COUNT(), @kv_ttl, @kv_version, @kv_live"
    ),
    touch=(
        "UPDATE store SET ttl = (@kv_ttl := CAST({expiry} AS SIGNED)), version = (@kv_version := {next_version}),"
        " sweep_slot = {slot} WHERE {key} = {key_param} AND ttl > {now_ms}{check}{fence}" + _REPORT
    ),
)
STATEMENTS = Statements.build(DIALECT, WRITES)
# A counter in one statement (``Node.incr``). ON DUPLICATE KEY UPDATE assigns left to right, each
# assignment seeing the ones before: liveness and the check come first, from the old row, and ttl
# last. The VALUES row sets the report's variables for a fresh insert; the update branch
# overwrites them. A value that is no integer leaves the row as it was and reports @kv_ok = 0.
_VALID_SUM = (
    f"(value REGEXP '^({INTEGER_PATTERN})$' AND CAST(value AS DECIMAL(20, 0)) + ? BETWEEN {-(2**63)} AND {2**63 - 1})"
)
INCR = DIALECT.render(
    "INSERT INTO store ({key}, value, ttl, version, sweep_slot)"
    f" VALUES (?, (@kv_value := ?), (@kv_ttl := {PERSISTENT_TTL}),"
    " (@kv_version := {now_us} + {fence_term}) + 0 * (@kv_ok := 1), NULL)"
    " ON DUPLICATE KEY UPDATE version = IF((@kv_ok := NOT (@kv_live := ttl > {now_ms}) OR {valid_sum}),"
    " (@kv_version := {greatest}(version + 1, VALUES(version))), version),"
    " value = IF(@kv_ok, (@kv_value := IF(@kv_live, CAST(CAST(value AS DECIMAL(20, 0)) + ? AS CHAR), VALUES(value))),"
    " value),"
    " sweep_slot = IF(@kv_ok AND NOT @kv_live, NULL, sweep_slot),"
    " ttl = (@kv_ttl := IF(@kv_ok AND NOT @kv_live, VALUES(ttl), ttl));"
    " SELECT @kv_ok, @kv_value, @kv_ttl, @kv_version",
    valid_sum=_VALID_SUM,
)
# MariaDB >= 10.5: the upsert alone, reporting the row it left. ``@kv_live`` is 0 from the VALUES
# clause (a fresh insert) unless the conflict branch records the replaced row's liveness. MariaDB
# fills, writes and returns one row after another, so in a multi-row batch each row's RETURNING
# sees the ``@kv_live`` of its own row.
_UPSERT_ROW = "(?, ?, CAST({expiry} AS SIGNED), {now_us} + {fence_term} + 0 * (@kv_live := 0), ?)"
_UPSERT_RETURNING = (
    " ON DUPLICATE KEY UPDATE value = VALUES(value),"
    " version = {greatest}(version + 1, VALUES(version)) + 0 * (@kv_live := ttl > {now_ms}),"
    " sweep_slot = IF(VALUES(sweep_slot) IS NULL, NULL, COALESCE(sweep_slot, VALUES(sweep_slot))),"
    " ttl = VALUES(ttl) RETURNING {key}, ttl, version, @kv_live"
)
_UPSERT_INTO = "INSERT INTO store ({key}, value, ttl, version, sweep_slot) VALUES "
MARIADB_UPSERT = DIALECT.render(_UPSERT_INTO + _UPSERT_ROW + _UPSERT_RETURNING)


@functools.lru_cache(maxsize=256)
def mariadb_upsert_many(count: int) -> str:
    """The multi-row upsert for ``count`` rows (cached: batch sizes repeat)."""
    return DIALECT.render(_UPSERT_INTO + values_rows(count, _UPSERT_ROW) + _UPSERT_RETURNING)


_RETURNING_SINCE = (10, 5)

# Client errors (2xxx) and server errors that mean the connection or server is gone:
# 1040 too many connections, 1053 shutdown in progress, 1927 connection killed (MariaDB),
# 2003 can't connect, 2006 server has gone away, 2013 lost connection during query,
# 1047 a Galera node that is not (or no longer) part of the primary component: WSREP not ready,
# 2014 commands out of sync (the client lost its place in the protocol, as when a server dies
# mid-reply; so does a pymysql error with no error number, "Packet sequence number wrong").
_UNAVAILABLE_ERRNOS = frozenset({1040, 1047, 1053, 1927, 2003, 2006, 2013, 2014, 2055})
_GALERA_STATE = (
    "SELECT @@wsrep_on, (SELECT variable_value FROM information_schema.global_status"
    " WHERE variable_name = 'WSREP_LOCAL_STATE_COMMENT')"
)
_TIMEOUT_ERRNOS = frozenset({1205, 3024, 1969})  # lock wait timeout, query execution interrupted
_STALE_RING_ERRNO = 4409  # raised by kvstore_fence


def has_insert_returning(server_version: str) -> bool:
    """Whether ``SELECT VERSION()`` names a MariaDB with ``INSERT … RETURNING`` (MySQL has none)."""
    if "mariadb" not in server_version.lower():
        return False
    try:
        major, minor = (int(part) for part in server_version.split("-", 1)[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= _RETURNING_SINCE


def connect_arguments(dsn: str) -> dict[str, Any]:
    """aiomysql keyword arguments for a ``mysql://user:password@host:port/database[?ssl=…]`` DSN (its first host).

    TLS, like libpq's ``sslmode``: ``ssl=verify`` (certificate and host name checked; ``ssl-ca=PATH``
    names the CA file) or ``ssl=require`` (encrypted, certificate not checked).
    """
    parts = urlsplit(dsn)
    options = dict(parse_qsl(parts.query))
    host, port = dsn_hosts(dsn)[0]
    arguments: dict[str, Any] = {
        "host": host or "127.0.0.1",
        "port": port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")),
    }
    mode = options.get("ssl", "disable")
    if mode in ("verify", "require"):
        context = ssl.create_default_context(cafile=options.get("ssl-ca"))
        if mode == "require":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        arguments["ssl"] = context
    elif mode != "disable":
        raise ValueError(f"ssl={mode!r}: expected verify, require or disable")
    return arguments


class MySQLNode(ServerNode[aiomysql.Connection]):
    dialect = DIALECT
    statements = STATEMENTS
    driver_errors = (OSError, pymysql.MySQLError, TimeoutError)
    sweeper_lock_statements = ("SELECT GET_LOCK(%s, 0)", "SELECT RELEASE_LOCK(%s)")

    def __init__(self, shard: str, role: str, dsn: str, pool: PoolSettings) -> None:
        super().__init__(shard, role, dsn, pool)
        self._upsert_returns = False  # MariaDB >= 10.5: the upsert reports its row itself (see open)
        self._session = {
            "connect_timeout": pool.connect_timeout_s,
            "autocommit": True,
            "charset": "utf8mb4",
            # UTC so that UNIX_TIMESTAMP(NOW()) never meets a DST fold; a server-side statement
            # limit so a stuck query cannot hold a connection forever (max_statement_time is
            # MariaDB's; the /*M! */ comment hides it from MySQL); sql_notes = 0 so that "already
            # exists" notes from CREATE ... IF NOT EXISTS are not warnings.
            "init_command": (
                "SET time_zone = '+00:00', sql_notes = 0"
                f" /*M!, SESSION max_statement_time = {pool.statement_timeout_s} */"
            ),
            **connect_arguments(dsn),
        }
        # GET_LOCK names are server-wide: name the database so that two shards on one server differ.
        self.lock_params = (f"kvstore.sweeper.{self._session['db']}"[:64],)
        self._hosts = [(host or "127.0.0.1", port or 3306) for host, port in dsn_hosts(dsn)]
        self._host_index = 0  # the host connections go to until it fails

    async def open(self) -> None:
        await super().open()
        version = await self._fetch_one("SELECT VERSION()", ())
        self._upsert_returns = version is not None and has_insert_returning(str(version[0]))
        if self._upsert_returns:
            self.statements = replace(STATEMENTS, upsert=MARIADB_UPSERT)

    async def _fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._cursor(write=False) as cursor:
            await cursor.execute(self._fenced(sql), params)
            row: tuple[Any, ...] | None = await cursor.fetchone()
        return row

    async def _write_returning(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._cursor(write=True) as cursor:
            await cursor.execute(self._fenced(sql), params)
            await cursor.nextset()
            changed, ttl, version = await cursor.fetchone()
        return None if changed == 0 else (ttl, version)

    async def incr(self, key: str, by: int) -> Row | None:
        async with self._cursor(write=True) as cursor:
            await cursor.execute(self._fenced(INCR), (key, str(by).encode(), by, by))
            await cursor.nextset()
            ok, value, ttl, version = await cursor.fetchone()
        if not ok:
            return None
        return Row.from_columns(int(ttl), int(version), value if isinstance(value, bytes) else str(value).encode())

    async def _upsert(self, sql: str, params: Params) -> tuple[int, int, bool]:
        async with self._cursor(write=True) as cursor:
            await cursor.execute(self._fenced(sql), params)
            if self._upsert_returns:
                _, ttl, version, replaced_live = await cursor.fetchone()
                return int(ttl), int(version), not int(replaced_live)
            await cursor.nextset()
            changed, ttl, version, replaced_live = await cursor.fetchone()
        return int(ttl), int(version), changed == 1 or not replaced_live

    async def put_many(self, writes: Sequence[Put]) -> list[tuple[Row, bool]]:
        if not self._upsert_returns:
            return await super().put_many(writes)
        async with self._cursor(write=True) as cursor:
            await cursor.execute(self._fenced(mariadb_upsert_many(len(writes))), put_params(writes))
            rows = await cursor.fetchall()
        results = {
            key.decode(): (Row.from_columns(int(ttl), int(version)), not int(replaced_live))
            for key, ttl, version, replaced_live in rows
        }
        return [results[write.key] for write in writes]

    async def _write(self, sql: str, params: Params, *, background: bool = False) -> int:
        async with self._cursor(write=True, background=background) as cursor:
            await cursor.execute(self._fenced(sql), params)
            return int(cursor.rowcount)

    async def _fetch_all(self, sql: str, params: Params, *, background: bool = False) -> list[tuple[Any, ...]]:
        async with self._cursor(write=False, background=background) as cursor:
            await cursor.execute(self._fenced(sql), params)
            rows = await cursor.fetchall()
        # Keys (always the first column) are VARBINARY: they come back as bytes; values stay bytes.
        return [(row[0].decode(), *row[1:]) if isinstance(row[0], bytes) else tuple(row) for row in rows]

    async def replica_state(self, primary_position: str) -> ReplicaState:
        """Caught up by GTID, and Seconds_Behind_Master, which only SHOW SLAVE STATUS tells.

        A Galera node is no binlog replica: synced, it is as current as certification makes it, so
        its lag is 0; not synced (joining, donor), it is out of rotation. Whether it may serve a
        read-after token stays ``has_replayed``'s to say.
        """
        async with self._cursor(write=False) as cursor:
            await cursor.execute(_GALERA_STATE)
            wsrep_on, state = await cursor.fetchone()
            if wsrep_on:
                return ReplicaState(caught_up=False, seconds_since_replay=0.0 if state == "Synced" else None)
            await cursor.execute(self.statements.replica_state, (primary_position,))
            (caught_up,) = await cursor.fetchone()
            await cursor.execute("SHOW SLAVE STATUS")
            row = await cursor.fetchone()
            names = [column[0] for column in cursor.description or ()]
        status = dict(zip(names, row, strict=True)) if row else {}
        running = status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"
        seconds = status.get("Seconds_Behind_Master") if running else None
        return ReplicaState(caught_up=bool(caught_up), seconds_since_replay=None if seconds is None else float(seconds))

    @asynccontextmanager
    async def _cursor(self, write: bool, background: bool = False) -> AsyncIterator[aiomysql.Cursor]:
        async with self._connection(write, background) as connection, connection.cursor() as cursor:
            yield cursor

    # -- the driver's primitives for the connection core (server.py) ---------------

    async def _connect(self) -> aiomysql.Connection:
        if len(self._hosts) == 1:
            return await aiomysql.connect(**self._session)
        failure: BaseException | None = None
        for step in range(len(self._hosts)):
            index = (self._host_index + step) % len(self._hosts)
            host, port = self._hosts[index]
            try:
                connection = await aiomysql.connect(**{**self._session, "host": host, "port": port})
            except self.driver_errors as error:
                failure = error
                continue
            if await self._ready(connection):
                self._host_index = index
                return connection
            connection.close()
            failure = pymysql.err.OperationalError(1047, f"{host}:{port}: Galera node not synced")
        assert failure is not None
        raise failure

    async def _ready(self, connection: aiomysql.Connection) -> bool:
        """Whether a node may take requests: a Galera node only once synced with the cluster."""
        async with connection.cursor() as cursor:
            await cursor.execute(_GALERA_STATE)
            wsrep_on, state = await cursor.fetchone()
        return not wsrep_on or state == "Synced"

    def _is_closed(self, connection: aiomysql.Connection) -> bool:
        # A server that closed the connection (restarted, killed it, failed over) leaves its reader at
        # EOF before aiomysql marks it closed; aiomysql's own pool drops such connections the same way.
        return bool(connection.closed or connection._reader.at_eof())

    def _in_transaction(self, connection: aiomysql.Connection) -> bool:
        return bool(connection.get_transaction_status())

    async def _close_connection(self, connection: aiomysql.Connection) -> None:
        await connection.ensure_closed()

    def _terminate(self, connection: aiomysql.Connection) -> None:
        connection.close()

    async def _execute(self, connection: aiomysql.Connection, sql: str) -> None:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)

    async def _fetch_value(self, connection: aiomysql.Connection, sql: str, params: Params) -> Any:
        async with connection.cursor() as cursor:
            await cursor.execute(sql, params)
            (value,) = await cursor.fetchone()
        return value

    def _map_error(self, error: BaseException, write: bool) -> BaseException:
        # Any failure closes the connection (the core's default): one interrupted mid-protocol may
        # still have unread results on the wire.
        errno = error.args[0] if isinstance(error, pymysql.MySQLError) and error.args else None
        if errno == _STALE_RING_ERRNO:
            return self.stale_ring()
        if errno in _TIMEOUT_ERRNOS:
            return self.failure(ShardTimeout, f"statement timed out on the server ({describe(error)})")
        desynced = isinstance(error, pymysql.MySQLError) and not isinstance(errno, int)
        if isinstance(error, OSError | pymysql.err.InterfaceError) or errno in _UNAVAILABLE_ERRNOS or desynced:
            return self.connection_lost(error, write)
        return error
