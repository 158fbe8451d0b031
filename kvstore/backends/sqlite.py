"""SQLite through aiosqlite: the embedded default, so ``make run`` needs no server.

Three connections per shard and process, in autocommit mode: one for reads, one for writes and
one for the sweeper, so that neither writes nor the sweeper's deletes queue foreground reads (WAL
lets them run side by side), and so that a batch's transaction on the writer is never seen, half
done, by a read. A WAL journal and a busy timeout let several ``--workers`` processes share the
file safely.
``synchronous=FULL`` makes a committed write survive power loss, which is what a 2xx PUT promises.
"""

import asyncio
import contextlib
import copy
import fcntl
import functools
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from kvstore.backends.base import INTEGER_PATTERN, Put, Row, SweeperLock
from kvstore.backends.sql import (
    RING_EPOCH,
    Dialect,
    Params,
    PoolSettings,
    SqlNode,
    keyed_statement,
    put_params,
    values_rows,
)
from kvstore.errors import ShardTimeout, ShardUnavailable

_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

DIALECT = Dialect(
    name="sqlite",
    key_column="key",
    now_ms=_NOW_MS,
    # SQLite's own clock has millisecond resolution: a key hard-deleted and re-created within one
    # millisecond would get its old version back (ABA). Versions read the microsecond clock of the
    # process SQLite runs in instead (embedded: the same machine's clock), through a function
    # every connection registers.
    now_us="kv_now_us()",
    greatest="max",
    # The fence (sql.py), functions each connection registers, given the shard's epoch. SQLite
    # evaluates a WHERE term only with a row, so lookups fence the key they look up, which it must
    # compute first: a read of a missing key is refused too.
    fence=f"kvstore_fence({{epoch}}, {RING_EPOCH})",
    fenced_key=f"kvstore_fenced_key(?, {{epoch}}, {RING_EPOCH})",
    begin="BEGIN IMMEDIATE",  # the write lock first: no other process writes until COMMIT
    for_update="",  # the transaction holds the database's write lock
    incremented="kv_incremented(s.value, ?)",
    random_slot="(random() & 4611686018427387903)",
    # SQLite has no replication: a shard of it has no replicas (the config refuses them).
    replication_position="SELECT ''",
    has_replayed="SELECT 0 WHERE ? IS NULL",
    replica_state="SELECT 0, NULL WHERE ? IS NULL",
    table_stats="SELECT COUNT(*), COUNT(sweep_slot), 1 FROM store",  # no statistics: exact, one scan
    schema=(
        "CREATE TABLE IF NOT EXISTS store (key VARCHAR(255) NOT NULL PRIMARY KEY,"
        " value BLOB NOT NULL, ttl INTEGER NOT NULL, version INTEGER NOT NULL, sweep_slot INTEGER)",
        "CREATE TABLE IF NOT EXISTS kvstore_meta (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS kvstore_state (name VARCHAR(64) PRIMARY KEY, epoch INTEGER NOT NULL,"
        " value TEXT NOT NULL)",
    ),
    indexes=("CREATE INDEX IF NOT EXISTS store_sweep_slot ON store (sweep_slot) WHERE sweep_slot IS NOT NULL",),
    claim_schema_version="INSERT INTO kvstore_meta (name, value) VALUES ('schema_version', ?)"
    " ON CONFLICT (name) DO NOTHING",
)
STATEMENTS = DIALECT.statements()
_LIVE_KEYS = "SELECT key FROM store WHERE key {keys} AND ttl > {now_ms}{fence}"
_UPSERT_ROW = "(?, ?, {expiry}, {now_us} + {fence_term}, ?)"
_UPSERT_RETURNING = (
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, ttl = excluded.ttl,"
    " version = max(store.version + 1, excluded.version),"
    " sweep_slot = CASE WHEN excluded.sweep_slot IS NULL THEN NULL"
    " ELSE coalesce(store.sweep_slot, excluded.sweep_slot) END"
    " RETURNING key, ttl, version"
)


@functools.lru_cache(maxsize=256)
def _upsert_many(count: int) -> str:
    return DIALECT.render(
        "INSERT INTO store (key, value, ttl, version, sweep_slot) VALUES "
        + values_rows(count, _UPSERT_ROW)
        + _UPSERT_RETURNING
    )


def _now_us() -> int:
    return time.time_ns() // 1000


_INTEGER = re.compile(INTEGER_PATTERN.encode())
_FENCE_REFUSED = "user-defined function raised exception"  # what sqlite3 makes of the fence's error


def _fence(routed: int | None, current: int | None) -> int:
    """``kvstore_fence`` for SQLite: 0, or an error when the shard's epoch is not ``routed``."""
    if routed is not None and routed != (current or 0):
        raise ValueError(f"ring epoch {routed} is not this shard's ({current or 0})")
    return 0


def _fenced_key(key: str, routed: int | None, current: int | None) -> str:
    """``kvstore_fenced_key``: the key, or the fence's error."""
    _fence(routed, current)
    return key


def _incremented(value: bytes, by: int) -> bytes | None:
    """The ``incremented`` fragment for SQLite, which has no pattern matching of its own."""
    if not isinstance(value, bytes) or not _INTEGER.fullmatch(value):
        return None
    total = int(value) + by
    return str(total).encode() if -(2**63) <= total < 2**63 else None


class SQLiteNode(SqlNode):
    dialect = DIALECT
    statements = STATEMENTS

    def __init__(self, shard: str, role: str, path: str, pool: PoolSettings) -> None:
        super().__init__(shard, role)
        self._path = Path(path)
        self._busy_timeout_ms = int(pool.statement_timeout_s * 1000)
        self._reader: aiosqlite.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._writer_turn = asyncio.Lock()  # one statement or transaction at a time on the writer
        self._pinned: aiosqlite.Connection | None = None  # set on the node ``transaction`` hands out
        self._background: aiosqlite.Connection | None = None
        self._in_use = 0
        self._sweeper_lock = _FileLock(self, self._path.with_name(self._path.name + ".sweeper-lock"))

    async def open(self) -> None:
        self._reader = await self._connect()
        self._writer = await self._connect()
        self._background = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(self._path, isolation_level=None)
            await connection.create_function("kv_now_us", 0, _now_us, deterministic=False)
            await connection.create_function("kv_incremented", 2, _incremented, deterministic=True)
            await connection.create_function("kvstore_fence", 2, _fence, deterministic=False)
            await connection.create_function("kvstore_fenced_key", 3, _fenced_key, deterministic=False)
            await connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as error:
            raise self.failure(ShardUnavailable, f"cannot open {self._path}: {error}") from None
        return connection

    async def close(self, timeout_s: float) -> None:
        await self._sweeper_lock.close()
        for connection in (self._reader, self._writer, self._background):
            if connection is not None:
                await connection.close()
        self._reader = self._writer = self._background = None

    def connections_in_use(self) -> int:
        return self._in_use

    async def _fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._use(self._reader) as connection:
            rows = list(await connection.execute_fetchall(self._fenced(sql), params))
        return tuple(rows[0]) if rows else None

    async def _write_returning(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._writing() as connection:
            rows = list(await connection.execute_fetchall(self._fenced(sql), params))
        return tuple(rows[0]) if rows else None

    async def _write(self, sql: str, params: Params, *, background: bool = False) -> int:
        if background:
            async with (
                self._use(self._background) as connection,
                connection.execute(self._fenced(sql), params) as cursor,
            ):
                return cursor.rowcount
        async with self._writing() as connection, connection.execute(self._fenced(sql), params) as cursor:
            return cursor.rowcount

    async def _write_rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        async with self._writing() as connection:
            return [tuple(row) for row in await connection.execute_fetchall(self._fenced(sql), params)]

    async def _fetch_all(self, sql: str, params: Params, *, background: bool = False) -> list[tuple[Any, ...]]:
        async with self._use(self._background if background else self._reader) as connection:
            return [tuple(row) for row in await connection.execute_fetchall(self._fenced(sql), params)]

    async def put_many(self, writes: Sequence[Put]) -> list[tuple[Row, bool]]:
        """One transaction: which keys are live, then the multi-row upsert. ``BEGIN IMMEDIATE`` takes
        the write lock first, so no other writer (process) can change a key between the two."""
        keys = [write.key for write in writes]
        async with self._writing() as connection:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                live = await connection.execute_fetchall(
                    self._fenced(keyed_statement(DIALECT, _LIVE_KEYS, len(keys))), keys
                )
                rows = await connection.execute_fetchall(self._fenced(_upsert_many(len(writes))), put_params(writes))
                await connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(connection.execute("ROLLBACK"))
                raise
        was_live = {row[0] for row in live}
        results = {key: (Row.from_columns(ttl, version), key not in was_live) for key, ttl, version in rows}
        return [results[key] for key in keys]

    def sweeper_lock(self) -> SweeperLock:
        return self._sweeper_lock

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        if self._pinned is not None:
            yield self._pinned
            return
        async with self._writer_turn, self._use(self._writer) as connection:
            yield connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["SQLiteNode"]:
        async with self._writing() as connection:
            await connection.execute(DIALECT.begin)
            bound = copy.copy(self)
            bound._pinned = bound._reader = connection  # its reads too, so they see its writes
            try:
                yield bound
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")

    @asynccontextmanager
    async def _use(self, connection: aiosqlite.Connection | None) -> AsyncIterator[aiosqlite.Connection]:
        if connection is None:
            raise self.failure(ShardUnavailable, "not open")
        self._in_use += 1
        try:
            yield connection
        except sqlite3.OperationalError as error:
            if _FENCE_REFUSED in str(error):
                raise self.stale_ring() from None
            if "locked" in str(error) or "busy" in str(error):
                raise self.failure(ShardTimeout, f"database file busy: {error}") from None
            if "unable to open" in str(error) or "disk I/O" in str(error):
                raise self.failure(ShardUnavailable, str(error)) from None
            raise
        finally:
            self._in_use -= 1


class _FileLock(SweeperLock):
    """``flock`` on a file beside the database: the kernel drops it when the holder's process dies.

    The descriptor stays open between bursts; ``flock`` excludes other descriptors of the file,
    in this process as in others.
    """

    def __init__(self, node: SQLiteNode, path: Path) -> None:
        self._node = node
        self._path = path
        self._descriptor: int | None = None
        self._held = False

    async def acquire(self) -> bool:
        if self._held:
            return True
        try:
            if self._descriptor is None:
                self._descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as error:
            raise self._node.failure(ShardUnavailable, f"sweeper lock {self._path}: {error.strerror}") from None
        self._held = True
        return True

    def held(self) -> bool:
        return self._held

    async def release(self) -> None:
        if self._held and self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        self._held = False

    async def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # drops the lock with it
        self._descriptor, self._held = None, False
