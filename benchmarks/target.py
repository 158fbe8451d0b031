"""One database under test for the node-level benchmarks: where it is, a kvstore node open on it, and
plain SQL beside the node (bulk loads, statistics, what the engine says of itself)."""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import aiomysql
import asyncpg

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends import mysql as mysql_backend
from kvstore.backends import postgres as postgres_backend
from kvstore.backends import sqlite as sqlite_backend
from kvstore.backends.sql import Dialect
from tests.support.rawdb import insert_rows

ENGINE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB"}
DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite_backend.DIALECT,
    "postgres": postgres_backend.DIALECT,
    "mysql": mysql_backend.DIALECT,
}
SHARD = "bench"
POOL = PoolSettings(min_size=1, max_size=16, connect_timeout_s=5, statement_timeout_s=30)
LOAD_CHUNK = 100_000
ANALYZE = {"postgres": "ANALYZE store", "mysql": "ANALYZE TABLE store"}  # SQLite: kvstore never analyzes
SERVER_VERSION = {"sqlite": "SELECT sqlite_version()", "postgres": "SHOW server_version", "mysql": "SELECT VERSION()"}
CACHE_SIZE = {  # the engine's own page cache
    "sqlite": "SELECT 'cache_size ' || cache_size FROM pragma_cache_size()",
    "postgres": "SELECT 'shared_buffers ' || current_setting('shared_buffers')",
    "mysql": "SELECT CONCAT('innodb_buffer_pool_size ', @@innodb_buffer_pool_size DIV 1048576, 'MB')",
}

Row = tuple[str, bytes, int, int, int | None]
"""``(key, value, ttl, version, sweep_slot)``, as PUTs would have left it."""


@dataclass(frozen=True)
class Target:
    """One database under test: where it is, and a kvstore node open on it."""

    backend: str
    location: str
    node: Node

    @property
    def name(self) -> str:
        return ENGINE_NAMES[self.backend]

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.backend]


async def execute(target: Target, template: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection: ``{key}``/``{now_ms}`` fragments and ``?`` placeholders."""
    sql = target.dialect.render(template)
    if target.backend == "sqlite":
        with closing(sqlite3.connect(target.location, isolation_level=None)) as connection:
            return [tuple(row) for row in connection.execute(sql, params).fetchall()]
    if target.backend == "postgres":
        pg = await asyncpg.connect(target.location)
        try:
            return [tuple(row) for row in await pg.fetch(sql, *params)]
        finally:
            await pg.close()
    my = await aiomysql.connect(autocommit=True, **mysql_backend.connect_arguments(target.location))
    try:
        async with my.cursor() as cursor:
            await cursor.execute(sql, params or None)
            return [tuple(row) for row in await cursor.fetchall()]
    finally:
        my.close()


async def open_target(backend: str, location: str) -> Target:
    node = create_node(backend, SHARD, "primary", location, POOL)
    await node.open()
    await node.ensure_schema()
    return Target(backend, location, node)


async def analyze(target: Target) -> None:
    if target.backend in ANALYZE:
        await execute(target, ANALYZE[target.backend])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def load(target: Target, rows: Iterator[Row]) -> None:
    """Bulk-load in chunks, then refresh the planner statistics."""
    while chunk := [row for _, row in zip(range(LOAD_CHUNK), rows, strict=False)]:
        await insert_rows(target.backend, target.location, chunk)
    await analyze(target)
