"""The expiry sweeper on real databases: reclaim rate, races with writers, full sweeps (the node calls it
makes are in test_node_contract.py)."""

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.config import SweeperSettings
from kvstore.sweeper import BURST_S, FullSweepProgress, ShardSweeper, acquire_within, full_sweep, sweep_cycle
from tests.support import rawdb

DEAD_FRACTION_BOUND_S = 60.0  # the stated bound for 27k dead rows among 42k sampled ones


async def dead_and_live(backend: str, location: str) -> tuple[int, int, int]:
    """(dead rows with an expiry, live rows with an expiry, persistent rows), counted exactly."""
    now_ms = int(time.time() * 1000)
    rows = await rawdb.execute(
        backend,
        location,
        "SELECT SUM(CASE WHEN ttl <= ? THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN ttl > ? AND sweep_slot IS NOT NULL THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN sweep_slot IS NULL THEN 1 ELSE 0 END) FROM store",
        now_ms,
        now_ms,
    )
    return tuple(int(count or 0) for count in rows[0])  # type: ignore[return-value]


async def test_sweeper_brings_the_dead_fraction_below_the_threshold(
    node: Node, backend: str, fresh_location: str
) -> None:
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)
    rows: list[tuple[str, bytes, int, int, int | None]] = []
    for i in range(50_000):
        if i < 25_000:
            ttl, slot = now_ms + 1_000, rng.randrange(1 << 62)  # short TTL: expired by the time we sweep
        elif i < 40_000:
            ttl, slot = now_ms + 3_600_000, rng.randrange(1 << 62)  # long TTL: live, sampled
        else:
            ttl, slot = 2**63 - 1, None  # persistent: never sampled
        rows.append((f"k{i:05d}", b"v" * 20, ttl, now_ms * 1000, slot))
    for i in range(25_000, 27_000):  # soft-deleted, as DELETE leaves them
        rows[i] = (rows[i][0], rows[i][1], -1, rows[i][3], rows[i][4])
    await rawdb.insert_rows(backend, fresh_location, rows)
    await asyncio.sleep(max(0.0, (now_ms + 1_100) / 1000 - time.time()))
    assert await dead_and_live(backend, fresh_location) == (27_000, 13_000, 10_000)

    settings = SweeperSettings(cycle_budget_ms=25)  # Redis's share of each tick: how fast it converges
    stop = asyncio.Event()
    sweeper = ShardSweeper("t", node, settings)
    task = asyncio.create_task(sweeper.run(stop))
    started = time.monotonic()
    try:
        while True:
            dead, live, _ = await dead_and_live(backend, fresh_location)
            if dead / (dead + live) < settings.stale_threshold:
                break
            assert time.monotonic() - started < DEAD_FRACTION_BOUND_S, f"still {dead} dead rows"
            await asyncio.sleep(0.25)
    finally:
        stop.set()
        await task
    assert sweeper.stale_estimate > 0
    dead, live, persistent = await dead_and_live(backend, fresh_location)
    assert (live, persistent) == (13_000, 10_000), "no live or persistent row was touched"
    soft_deleted = await rawdb.execute(backend, fresh_location, "SELECT COUNT(*) FROM store WHERE ttl = -1")
    assert soft_deleted[0][0] < 2_000, "soft-deleted rows are reclaimed too"

    progress = await full_sweep(node, 1000, FullSweepProgress())
    assert progress.deleted == dead and progress.scanned == 50_000 - 27_000 + dead
    assert await dead_and_live(backend, fresh_location) == (0, 13_000, 10_000)


async def test_keys_rewritten_while_the_sweeper_races_them_are_never_lost(node: Node) -> None:
    keys = [f"hot{i}" for i in range(100)]
    stop = asyncio.Event()
    eager = SweeperSettings(tick_ms=1, cycle_budget_ms=1, keys_per_sample=20)
    task = asyncio.create_task(ShardSweeper("t", node, eager).run(stop))
    try:
        for round_number in range(5):
            await asyncio.gather(*(node.replace(key, b"x", 2, None) or node.create(key, b"x", 2) for key in keys))
            await asyncio.sleep(0.01)  # all expired now: fair game for the sweeper
            value = b"round %d" % round_number
            for key in keys:
                if await node.replace(key, value, None, None) is None:
                    assert await node.create(key, value, None) is not None
            rows = await asyncio.gather(*(node.get(key) for key in keys))
            assert [row.value if row else None for row in rows] == [value] * len(keys)
    finally:
        stop.set()
        await task


@pytest.fixture
async def other_node(backend: str, fresh_location: str, node: Node) -> AsyncIterator[Node]:
    """A second node on the same database, as another process would open it."""
    opened = create_node(backend, "t", "primary", fresh_location, PoolSettings(1, 2, 2.0, 10.0))
    await opened.open()
    yield opened
    await opened.close(5.0)


async def test_only_one_sweeper_per_shard(node: Node, other_node: Node) -> None:
    first, second = node.sweeper_lock(), other_node.sweeper_lock()
    assert await first.acquire() and first.held()
    assert not await second.acquire() and not second.held()
    await first.release()
    assert not first.held()
    assert await second.acquire()
    assert not await first.acquire()
    await second.release()


async def lock_holder_session(backend: str, location: str) -> object:
    """Which database session holds the sweeper lock (PostgreSQL backend pid, MySQL connection id)."""
    if backend == "postgres":
        sql = (  # this database's only: the instance is shared with other tests' shards
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    else:
        sql = "SELECT IS_USED_LOCK(CONCAT('kvstore.sweeper.', DATABASE()))"
    rows = await rawdb.execute(backend, location, sql)
    assert len(rows) == 1 and rows[0][0] is not None, rows
    return rows[0][0]


async def test_the_lock_is_taken_again_on_the_connection_it_keeps(
    node: Node, backend: str, fresh_location: str
) -> None:
    lock = node.sweeper_lock()
    if backend == "sqlite":  # an flock on a descriptor kept open: no new descriptor per burst
        assert await lock.acquire()
        await lock.release()
        descriptors = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            assert await lock.acquire()
            await lock.release()
        assert len(os.listdir("/proc/self/fd")) == descriptors, "a new descriptor for each burst"
        return
    sessions = set()
    for _ in range(20):
        assert await lock.acquire()
        sessions.add(await lock_holder_session(backend, fresh_location))
        await lock.release()
    assert len(sessions) == 1, "a new connection for each burst"


async def test_a_sweeper_gives_the_lock_back_between_bursts(
    node: Node, other_node: Node, backend: str, fresh_location: str
) -> None:
    stop = asyncio.Event()
    eager = SweeperSettings(tick_ms=10, cycle_budget_ms=5)
    task = asyncio.create_task(ShardSweeper("t", node, eager).run(stop))
    manual = other_node.sweeper_lock()
    try:
        await asyncio.sleep(0.2)
        assert node.sweeper_lock().held(), "the front end's sweeper took the lock"
        started = time.monotonic()
        assert await acquire_within(manual, 5.0)
        assert time.monotonic() - started < BURST_S + 0.5
        expired = int(time.time() * 1000) - 1
        await rawdb.insert_rows(backend, fresh_location, [(f"d{i}", b"x", expired, 1, i) for i in range(200)])
        await asyncio.sleep(0.5)
        assert not node.sweeper_lock().held(), "two sweepers on one shard"
        assert (await dead_and_live(backend, fresh_location))[0] == 200, "the front end swept without the lock"
        await manual.release()
        deadline = time.monotonic() + 10
        while (await dead_and_live(backend, fresh_location))[0] > 0:
            assert time.monotonic() < deadline, "the front end's sweeper did not take the lock back"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    assert not node.sweeper_lock().held(), "stopping gives the lock back"


LOCK_HOLDER = """
import asyncio, sys, time
from kvstore.backends import PoolSettings, create_node

async def main():
    node = create_node(sys.argv[1], "t", "primary", sys.argv[2], PoolSettings(1, 2, 2.0, 10.0))
    await node.open()
    print("locked" if await node.sweeper_lock().acquire() else "busy", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_dead_holder_releases_the_sweeper_lock(node: Node, backend: str, fresh_location: str) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220 - a child that must outlive this coroutine's awaits
        [sys.executable, "-c", LOCK_HOLDER, backend, fresh_location], stdout=subprocess.PIPE, text=True
    )
    lock = node.sweeper_lock()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert not await lock.acquire()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    deadline = time.monotonic() + 10
    while not await lock.acquire():
        assert time.monotonic() < deadline, "the lock outlived its holder"
        await asyncio.sleep(0.1)
    await lock.release()


async def test_sweep_cycle_stops_on_a_clean_sample(node: Node) -> None:
    for i in range(100):
        await node.create(f"live{i}", b"v", 3_600_000)
    result = await sweep_cycle(node, SweeperSettings(), budget_s=None)
    assert (result.batches, result.dead, result.deleted) == (1, 0, 0)
    assert result.sampled == 20
