"""The expiry sweeper on real databases: reclaim rate, races with writers, full sweeps (the node calls it
makes are in test_node_contract.py)."""

import asyncio
import random
import time

from kvstore.backends import Node
from kvstore.config import SweeperSettings
from kvstore.sweeper import FullSweepProgress, ShardSweeper, full_sweep, sweep_cycle
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


async def test_sweep_cycle_stops_on_a_clean_sample(node: Node) -> None:
    for i in range(100):
        await node.create(f"live{i}", b"v", 3_600_000)
    result = await sweep_cycle(node, SweeperSettings(), budget_s=None)
    assert (result.batches, result.dead, result.deleted) == (1, 0, 0)
    assert result.sampled == 20
