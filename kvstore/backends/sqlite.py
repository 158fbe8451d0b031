"""SQLite through aiosqlite: the embedded default, so ``make run`` needs no server.

One connection per shard and process for requests, one more for the sweeper (so that its
deletes never queue foreground reads; WAL lets them run side by side), in autocommit mode,
WAL journal and a busy timeout so that several ``--workers`` processes share the file safely.
``synchronous=FULL`` makes a committed write survive power loss, which is what a 2xx PUT promises.
"""

import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from kvstore.backends.base import SweeperLock
from kvstore.backends.sql import Dialect, Params, PoolSettings, SqlNode
from kvstore.errors import ShardTimeout, ShardUnavailable

_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

DIALECT = Dialect(
    name="sqlite",
    key_column="key",
    now_ms=_NOW_MS,
    now_us=f"({_NOW_MS} * 1000)",  # SQLite's clock has millisecond resolution
    greatest="max",
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


class SQLiteNode(SqlNode):
    dialect = DIALECT
    statements = STATEMENTS

    def __init__(self, shard: str, role: str, path: str, pool: PoolSettings) -> None:
        super().__init__(shard, role)
        self._path = Path(path)
        self._busy_timeout_ms = int(pool.statement_timeout_s * 1000)
        self._connection: aiosqlite.Connection | None = None
        self._background: aiosqlite.Connection | None = None
        self._in_use = 0
        self._sweeper_lock = _FileLock(self, self._path.with_name(self._path.name + ".sweeper-lock"))

    async def open(self) -> None:
        self._connection = await self._connect()
        self._background = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(self._path, isolation_level=None)
            await connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as error:
            raise self.failure(ShardUnavailable, f"cannot open {self._path}: {error}") from None
        return connection

    async def close(self, timeout_s: float) -> None:
        await self._sweeper_lock.close()
        for connection in (self._connection, self._background):
            if connection is not None:
                await connection.close()
        self._connection = self._background = None

    def connections_in_use(self) -> int:
        return self._in_use

    async def _fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        async with self._use() as connection:
            rows = list(await connection.execute_fetchall(sql, params))
        return tuple(rows[0]) if rows else None

    async def _write_returning(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        return await self._fetch_one(sql, params)

    async def _write(self, sql: str, params: Params, *, background: bool = False) -> int:
        async with self._use(background) as connection, connection.execute(sql, params) as cursor:
            return cursor.rowcount

    async def _fetch_all(self, sql: str, params: Params, *, background: bool = False) -> list[tuple[Any, ...]]:
        async with self._use(background) as connection:
            return [tuple(row) for row in await connection.execute_fetchall(sql, params)]

    def sweeper_lock(self) -> SweeperLock:
        return self._sweeper_lock

    @asynccontextmanager
    async def _use(self, background: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        connection = self._background if background else self._connection
        if connection is None:
            raise self.failure(ShardUnavailable, "not open")
        self._in_use += 1
        try:
            yield connection
        except sqlite3.OperationalError as error:
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
