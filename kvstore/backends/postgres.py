"""PostgreSQL through asyncpg: ``$n`` placeholders, ``INSERT … ON CONFLICT``, ``clock_timestamp()``."""

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from kvstore.backends.base import INTEGER_PATTERN, PERSISTENT_TTL, RING_STATE, Put, Row
from kvstore.backends.server import ServerNode
from kvstore.backends.sql import (
    STANDARD_WRITES,
    Dialect,
    Params,
    PoolSettings,
    Statements,
    sweep_slot,
)
from kvstore.errors import ShardTimeout

_EPOCH = "extract(epoch from clock_timestamp())"

DIALECT = Dialect(
    name="postgres",
    key_column="key",
    now_ms=f"floor({_EPOCH} * 1000)::bigint",
    now_us=f"floor({_EPOCH} * 1000000)::bigint",
    greatest="GREATEST",
    placeholder="$",
    key_list="= ANY(?)",
    random_slot="floor(random() * 4611686018427387904)::bigint",
    integer_param="?::bigint",
    # 'escape' keeps ASCII digits as they are and turns any other byte into \ooo, so the pattern
    # check never fails on bytes that are not UTF-8; the sum is exact in numeric, then range-checked.
    incremented=(
        f"CASE WHEN encode(s.value, 'escape') ~ '^({INTEGER_PATTERN})$' THEN (SELECT convert_to(n::text, 'UTF8')"
        " FROM (SELECT encode(s.value, 'escape')::numeric + ?::bigint AS n) sum"
        f" WHERE n BETWEEN {-(2**63)} AND {2**63 - 1}) END"
    ),
    # The insert position, not the write position: with synchronous_commit=off a commit record can be
    # inserted but not yet written when the write returns, and the write position would come before it.
    replication_position="SELECT pg_current_wal_insert_lsn()::text",
    has_replayed="SELECT COALESCE(pg_last_wal_replay_lsn() >= ?::text::pg_lsn, false)",
    # Not in recovery (promoted, or not a standby at all) reads as "no replication": NULL lag.
    replica_state="SELECT COALESCE(pg_last_wal_replay_lsn() >= ?::text::pg_lsn, false),"
    " CASE WHEN pg_is_in_recovery() THEN"
    " COALESCE(extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp()), 0) END",
    # The planner's estimates (the partial index holds the rows with a sweep slot); -1 until
    # the table is first analyzed, which reads as "no figure" rather than a full count.
    table_stats="SELECT CASE WHEN t.reltuples >= 0 THEN t.reltuples::bigint END,"
    " CASE WHEN t.reltuples >= 0 THEN i.reltuples::bigint END, false"
    " FROM pg_class t, pg_class i WHERE t.oid = 'store'::regclass AND i.oid = 'store_sweep_slot'::regclass",
    schema=(
        # COLLATE "C": byte order, the same order MySQL's VARBINARY keys sort in.
        'CREATE TABLE IF NOT EXISTS store (key VARCHAR(255) COLLATE "C" PRIMARY KEY,'
        " value BYTEA NOT NULL, ttl BIGINT NOT NULL, version BIGINT NOT NULL, sweep_slot BIGINT)",
        "CREATE TABLE IF NOT EXISTS kvstore_meta (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS kvstore_state (name VARCHAR(64) PRIMARY KEY, epoch BIGINT NOT NULL,"
        " value TEXT NOT NULL)",
        # The fence (sql.py). STABLE with a literal argument: the planner makes it a one-time
        # filter, run before any row is read, on the statement's own snapshot.
        "CREATE OR REPLACE FUNCTION kvstore_fence(routed bigint) RETURNS bigint LANGUAGE plpgsql STABLE AS $$"
        " DECLARE current bigint; BEGIN IF routed IS NULL THEN RETURN 0; END IF;"
        f" SELECT epoch INTO current FROM kvstore_state WHERE name = '{RING_STATE}';"
        " IF COALESCE(current, 0) <> routed THEN RAISE EXCEPTION USING ERRCODE = 'KV409',"
        " MESSAGE = format('ring epoch %s is not this shard''s (%s)', routed, COALESCE(current, 0)); END IF;"
        " RETURN 0; END $$",
    ),
    # A fenced write takes ROW EXCLUSIVE on ``store`` before its snapshot, which conflicts with SHARE:
    # a new ring epoch waits for writes that read the old one, and later writes read the new one.
    ring_barrier="LOCK TABLE store IN SHARE MODE",
    # Partial: persistent rows (no slot) cost the index nothing.
    indexes=("CREATE INDEX IF NOT EXISTS store_sweep_slot ON store (sweep_slot) WHERE sweep_slot IS NOT NULL",),
    claim_schema_version="INSERT INTO kvstore_meta (name, value) VALUES ('schema_version', $1)"
    " ON CONFLICT (name) DO NOTHING",
)
# The unconditional PUT in one statement. RETURNING cannot see the row it replaced, so the
# conflict branch records whether that row was live in a transaction-local setting (gone when
# the statement's implicit transaction ends) while computing the version; a fresh insert is
# recognised by xmax = 0.
_REPLACE_RECORDING_LIVENESS = (
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = excluded.ttl,"
    " version = GREATEST(s.version + 1, excluded.version)"
    " + length(set_config('kvstore.replaced_live', (s.ttl > {now_ms})::text, true)) * 0,"
    " sweep_slot = CASE WHEN excluded.sweep_slot IS NULL THEN NULL ELSE COALESCE(s.sweep_slot, excluded.sweep_slot) END"
)
UPSERT = (
    "INSERT INTO store AS s (key, value, ttl, version, sweep_slot) VALUES (?, ?, {expiry}, {now_us} + {fence_term}, ?)"
    + _REPLACE_RECORDING_LIVENESS
    + " RETURNING ttl, version, xmax = 0, current_setting('kvstore.replaced_live', true)"
)
# The batch form: one array per column. PostgreSQL computes RETURNING for each row right after
# inserting or updating it, so the setting read there is the one this row's conflict branch wrote.
UPSERT_MANY = DIALECT.render(
    "INSERT INTO store AS s (key, value, ttl, version, sweep_slot)"
    f" SELECT u.key, u.value, COALESCE({{now_ms}} + u.ttl_ms, {PERSISTENT_TTL}), {{now_us}}, u.slot"
    " FROM unnest(?::varchar[], ?::bytea[], ?::bigint[], ?::bigint[]) AS u(key, value, ttl_ms, slot)"
    " WHERE {fence_term} = 0"  # a one-time filter: once per statement, not once per row
    + _REPLACE_RECORDING_LIVENESS
    + " RETURNING key, ttl, version, xmax = 0, current_setting('kvstore.replaced_live', true)"
)
STATEMENTS = Statements.build(DIALECT, replace(STANDARD_WRITES, upsert=UPSERT))

# pg_advisory_lock key of the shard's sweeper: "kvsweep" in ASCII. Advisory locks are per database.
_SWEEPER_LOCK_KEY = 0x6B767377656570
# SQLSTATE classes that mean "this server cannot serve you now", not "your query is wrong":
# 08 connection exception, 53 insufficient resources, 57P admin shutdown / cannot connect now,
# 25006 read-only transaction: a write reached a server that is (now) a standby, as after a
# failover; the session is dropped, so the pool's next connection finds the writable host.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "25006")
_STALE_RING_SQLSTATE = "KV409"  # raised by kvstore_fence


class PostgresNode(ServerNode[asyncpg.Connection]):
    dialect = DIALECT
    statements = STATEMENTS
    # TargetServerAttributeNotMatched: no host of a multi-host DSN is what target_session_attrs asks
    # for (no leader during a switchover, no standby left): as good as "cannot connect".
    driver_errors = (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.TargetServerAttributeNotMatched,
        TimeoutError,
    )
    sweeper_lock_statements = ("SELECT pg_try_advisory_lock($1)", "SELECT pg_advisory_unlock($1)")
    lock_params = (_SWEEPER_LOCK_KEY,)

    def __init__(self, shard: str, role: str, dsn: str, pool: PoolSettings) -> None:
        super().__init__(shard, role, dsn, pool)
        self._server_settings = {
            "application_name": "kvstore",
            "statement_timeout": str(int(pool.statement_timeout_s * 1000)),
        }

    async def _fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._connection(write=False) as connection:
            row = await connection.fetchrow(self._fenced(sql), *params)
        return None if row is None else tuple(row)

    async def _write_returning(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._connection(write=True) as connection:
            row = await connection.fetchrow(self._fenced(sql), *params)
        return None if row is None else tuple(row)

    async def _write(self, sql: str, params: Params, *, background: bool = False) -> int:
        async with self._connection(write=True, background=background) as connection:
            status = await connection.execute(self._fenced(sql), *params)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def _upsert(self, sql: str, params: Params) -> tuple[int, int, bool]:
        async with self._connection(write=True) as connection:
            ttl, version, inserted, replaced_live = await connection.fetchrow(self._fenced(sql), *params)
        return ttl, version, inserted or replaced_live != "true"

    async def _write_rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        async with self._connection(write=True) as connection:
            return [tuple(row) for row in await connection.fetch(self._fenced(sql), *params)]

    async def put_many(self, writes: Sequence[Put]) -> list[tuple[Row, bool]]:
        columns = (
            [write.key for write in writes],
            [write.value for write in writes],
            [write.ttl_ms for write in writes],
            [sweep_slot(write.ttl_ms) for write in writes],
        )
        async with self._connection(write=True) as connection:
            rows = await connection.fetch(self._fenced(UPSERT_MANY), *columns)
        results = {
            key: (Row.from_columns(ttl, version), inserted or replaced_live != "true")
            for key, ttl, version, inserted, replaced_live in rows
        }
        return [results[write.key] for write in writes]

    async def _fetch_all(self, sql: str, params: Params, *, background: bool = False) -> list[tuple[Any, ...]]:
        async with self._connection(write=False, background=background) as connection:
            return [tuple(row) for row in await connection.fetch(self._fenced(sql), *params)]

    # -- the driver's primitives for the connection core (server.py) ---------------

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn, timeout=self._settings.connect_timeout_s, server_settings=self._server_settings
        )

    def _is_closed(self, connection: asyncpg.Connection) -> bool:
        return bool(connection.is_closed())

    def _in_transaction(self, connection: asyncpg.Connection) -> bool:
        return bool(connection.is_in_transaction())

    async def _close_connection(self, connection: asyncpg.Connection) -> None:
        await connection.close()

    def _terminate(self, connection: asyncpg.Connection) -> None:
        with contextlib.suppress(asyncpg.InterfaceError):
            connection.terminate()

    async def _execute(self, connection: asyncpg.Connection, sql: str) -> None:
        await connection.execute(sql)

    async def _fetch_value(self, connection: asyncpg.Connection, sql: str, params: Params) -> Any:
        return await connection.fetchval(sql, *params)

    def _keeps_connection(self, error: BaseException) -> bool:
        # The server answered: the session is in a known state, unless the server is going away.
        return isinstance(error, asyncpg.PostgresError) and not _is_unavailable(error)

    def _map_error(self, error: BaseException, write: bool) -> BaseException:
        if isinstance(error, asyncpg.QueryCanceledError):
            return self.failure(ShardTimeout, "statement timed out on the server")
        if isinstance(error, asyncpg.PostgresError) and error.sqlstate == _STALE_RING_SQLSTATE:
            return self.stale_ring()
        if isinstance(error, asyncpg.PostgresError):
            return self.connection_lost(error, write) if _is_unavailable(error) else error
        if isinstance(error, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
            return self.connection_lost(error, write)
        return error


def _is_unavailable(error: asyncpg.PostgresError) -> bool:
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)
