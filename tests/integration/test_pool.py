"""The connection pool (kvstore/backends/pool.py) over real PostgreSQL connections."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from kvstore.backends.pool import ConnectionPool
from kvstore.cluster.instance import DatabaseInstance


@pytest.fixture
async def pool(postgres_instances: list[DatabaseInstance]) -> AsyncIterator[ConnectionPool[asyncpg.Connection]]:
    dsn = postgres_instances[0].dsn()

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    async def close(connection: asyncpg.Connection) -> None:
        await connection.close()

    opened: ConnectionPool[asyncpg.Connection] = ConnectionPool(
        connect,
        max_size=3,
        is_closed=lambda connection: bool(connection.is_closed()),
        close=close,
        terminate=lambda connection: connection.terminate(),
    )
    yield opened
    await opened.close(5.0)


async def test_never_more_than_max_size_and_waiters_are_served(pool: ConnectionPool[asyncpg.Connection]) -> None:
    peak = 0

    async def query(index: int) -> int:
        nonlocal peak
        connection = await pool.acquire()
        try:
            peak = max(peak, pool.in_use)
            await connection.execute("SELECT pg_sleep(0.01)")
            return int(await connection.fetchval("SELECT $1::int", index))
        finally:
            pool.release(connection)

    assert await asyncio.gather(*(query(index) for index in range(30))) == list(range(30))
    assert peak == 3 and pool.size == 3 and pool.in_use == 0


async def test_a_terminated_connection_is_dropped_and_its_place_reused(
    pool: ConnectionPool[asyncpg.Connection],
) -> None:
    held = [await pool.acquire() for _ in range(3)]
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "the pool is full"
    held[0].terminate()
    pool.release(held[0])  # frees its place: the waiter opens a new connection
    fresh = await asyncio.wait_for(waiting, 5)
    assert not fresh.is_closed() and fresh not in held
    assert await fresh.fetchval("SELECT 1") == 1
    for connection in (fresh, *held[1:]):
        pool.release(connection)
    assert pool.size == 3 and pool.in_use == 0


async def test_a_cancelled_waiter_leaks_nothing(pool: ConnectionPool[asyncpg.Connection]) -> None:
    held = [await pool.acquire() for _ in range(3)]
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for connection in held:
        pool.release(connection)
    assert pool.in_use == 0
    again = [await asyncio.wait_for(pool.acquire(), 5) for _ in range(3)]
    assert pool.size == 3
    for connection in again:
        pool.release(connection)


async def test_close_terminates_what_is_still_in_use(pool: ConnectionPool[asyncpg.Connection]) -> None:
    idle = await pool.acquire()
    busy = await pool.acquire()
    pool.release(idle)
    await pool.close(1.0)
    assert idle.is_closed()
    pool.release(busy)  # comes back after the close: terminated, not kept
    assert busy.is_closed() and pool.size == 0
    with pytest.raises(ConnectionError):
        await pool.acquire()
