"""The raw-driver ceiling: kvstore's own GET and PUT statements straight through asyncpg / aiomysql.

One Python process (uvloop), the same connections per node as one kvstore worker
(``pool_max_size``), the same routing (reads to the shard's replica when it has one, writes to the
primary; keys mapped with kvstore's ring, computed before the clock starts) and the same key
sequence. No HTTP, no kvstore code on the path: what the database tier can give one process.
Statements are imported from ``kvstore.backends.*``, never copied, and fenced as a front end
runs them on a cluster that holds no ring record (epoch 0). PostgreSQL pools skip asyncpg's reset
query, as kvstore's do.
"""

import itertools
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import aiomysql
import asyncpg
import uvloop

from benchmarks.load import Throughput, drive
from benchmarks.measurement import Measurement
from benchmarks.workloads import Workload
from kvstore.backends import mysql as mysql_backend
from kvstore.backends import postgres as postgres_backend
from kvstore.backends.sql import ROUTED_EPOCH
from kvstore.config import Settings

_MYSQL_SESSION = "SET time_zone = '+00:00'"  # as kvstore's sessions: NOW() read in UTC


class RawNode(Protocol):
    async def get(self, key: str) -> Any: ...
    async def put(self, key: str, value: bytes) -> Any: ...


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query on release, as in kvstore's pools."""


class PostgresRaw:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, stack: AsyncExitStack, dsn: str, size: int) -> "PostgresRaw":
        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, reset=_keep_session)
        stack.push_async_callback(pool.close)
        return cls(pool)

    async def get(self, key: str) -> Any:
        async with self.pool.acquire() as connection:
            return await connection.fetchrow(_POSTGRES_GET, key)

    async def put(self, key: str, value: bytes) -> Any:
        async with self.pool.acquire() as connection:
            return await connection.fetchrow(_POSTGRES_PUT, key, value, None, None)


def _routed(sql: str | None) -> str:
    """A kvstore statement as a front end runs it by ring epoch 0 (``SqlNode._fenced``)."""
    assert sql is not None
    return sql.replace(ROUTED_EPOCH, "0")


_POSTGRES_GET, _POSTGRES_PUT = _routed(postgres_backend.STATEMENTS.get), _routed(postgres_backend.STATEMENTS.upsert)
_MYSQL_GET, _MYSQL_PUT = _routed(mysql_backend.STATEMENTS.get), _routed(mysql_backend.STATEMENTS.upsert)


class MySQLRaw:
    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, stack: AsyncExitStack, dsn: str, size: int) -> "MySQLRaw":
        arguments = mysql_backend.connect_arguments(dsn)
        pool = await aiomysql.create_pool(
            minsize=size, maxsize=size, autocommit=True, charset="utf8mb4", init_command=_MYSQL_SESSION, **arguments
        )

        async def close() -> None:
            pool.close()
            await pool.wait_closed()

        stack.push_async_callback(close)
        return cls(pool)

    async def get(self, key: str) -> Any:
        async with self.pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(_MYSQL_GET, (key,))
            return await cursor.fetchone()

    async def put(self, key: str, value: bytes) -> Any:
        async with self.pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(_MYSQL_PUT, (key, value, None, None))
            await cursor.nextset()
            return await cursor.fetchone()


DRIVERS: dict[str, type[PostgresRaw] | type[MySQLRaw]] = {"postgres": PostgresRaw, "mysql": MySQLRaw}


@dataclass(frozen=True)
class RawShard:
    writer: RawNode
    reader: RawNode


async def open_shards(stack: AsyncExitStack, settings: Settings, use_replicas: bool) -> dict[str, RawShard]:
    size = settings.server.pool_max_size
    shards = {}
    for shard in settings.shards:
        driver = DRIVERS[shard.backend]
        writer: RawNode = await driver.open(stack, shard.primary, size)
        reader: RawNode = (
            await driver.open(stack, shard.replicas[0], size) if use_replicas and shard.replicas else writer
        )
        shards[shard.name] = RawShard(writer, reader)
    return shards


async def measure(
    settings: Settings,
    workload: Workload,
    keys: Sequence[str],
    value: bytes,
    duration_s: float,
    max_ops: int,
    use_replicas: bool = True,
) -> Measurement:
    """Replay ``keys`` (cyclically) with ``workload.connections`` tasks for ``duration_s`` or ``max_ops``."""
    ring = settings.ring()
    async with AsyncExitStack() as stack:
        shards = await open_shards(stack, settings, use_replicas)
        routed = [(key, shards[ring.owner(key)]) for key in keys]
        sequence: Iterator[tuple[str, RawShard]] = itertools.cycle(routed)
        read_share = workload.read_fraction

        async def operation(rng: random.Random) -> None:
            key, shard = next(sequence)
            if rng.random() < read_share:
                await shard.reader.get(key)
            else:
                await shard.writer.put(key, value)

        cpu_before = time.process_time()
        leg = await drive(operation, workload.connections, max_ops, duration_s)
        cpu_s = time.process_time() - cpu_before
    result = Throughput.of([leg])
    return Measurement(
        target="raw",
        workload=workload.name,
        connections=workload.connections,
        requests=result.ops - result.errors,
        duration_s=result.elapsed_s,
        errors=result.errors,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        tool="python",
        cpu_us_per_request=round(1e6 * cpu_s / result.ops, 1) if result.ops else None,
    )


def run(
    settings: Settings,
    workload: Workload,
    keys: Sequence[str],
    value: bytes,
    duration_s: float,
    max_ops: int,
    use_replicas: bool = True,
) -> Measurement:
    """The raw run on its own uvloop event loop, as a kvstore worker has."""
    return uvloop.run(measure(settings, workload, keys, value, duration_s, max_ops, use_replicas))
