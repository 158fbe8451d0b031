"""Section 4: reclaim rate and foreground impact."""

import asyncio
import math
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import REGISTRY

from benchmarks.load import Throughput, drive, progress
from benchmarks.sweeper_costs.rows import CONCURRENCY, K, half_expired_rows, key_name
from benchmarks.sweeper_costs.slot_index import reset
from benchmarks.target import SHARD, Target, execute, load, now_ms
from kvstore.config import SweeperSettings
from kvstore.sweeper import ShardSweeper

RECLAIM_EXPIRED = 100_000
RECLAIM_LIVE = 100_000
GET_SECONDS = 10.0
GET_DROP_TARGET = 0.10
SWEEPER_ALONE_S = 5.0
COUNT_DEAD = "SELECT COUNT(*) FROM store WHERE ttl <= ?"
T = TypeVar("T")


@dataclass(frozen=True)
class Sweep:
    """What one ``ShardSweeper`` run did: dead rows counted with SQL before and after, and its metrics."""

    seconds: float
    dead_before: int
    dead_after: int
    reclaimed_per_s: float
    stale_estimate: float
    cycles: float
    batches: float
    deleted_by_metrics: float


@dataclass(frozen=True)
class Reclaim:
    without_sweeper: Throughput
    with_sweeper: Throughput
    during_load: Sweep
    alone: Sweep


def sweeper_metric(name: str) -> float:
    return float(REGISTRY.get_sample_value(f"kvstore_sweeper_{name}_total", {"shard": SHARD}) or 0.0)


async def sweep_during(target: Target, expired_before: int, work: Awaitable[T]) -> tuple[T, Sweep]:
    """Run a ``ShardSweeper`` (default settings) for as long as ``work`` takes."""
    [(dead_before,)] = await execute(target, COUNT_DEAD, expired_before)
    sweeper = ShardSweeper(SHARD, target.node, SweeperSettings())
    stop = asyncio.Event()
    metrics_before = {name: sweeper_metric(name) for name in ("cycles", "sampled_keys", "deleted_rows")}
    started = time.perf_counter()
    task = asyncio.create_task(sweeper.run(stop))
    result = await work
    stop.set()
    await task
    seconds = time.perf_counter() - started
    [(dead_after,)] = await execute(target, COUNT_DEAD, expired_before)
    delta = {name: sweeper_metric(name) - before for name, before in metrics_before.items()}
    return result, Sweep(
        seconds=round(seconds, 2),
        dead_before=int(dead_before),
        dead_after=int(dead_after),
        reclaimed_per_s=round((dead_before - dead_after) / seconds, 1),
        stale_estimate=round(sweeper.stale_estimate, 4),
        cycles=delta["cycles"],
        batches=delta["sampled_keys"] / K,
        deleted_by_metrics=delta["deleted_rows"],
    )


async def reclaim(target: Target) -> Reclaim:
    await reset(target)
    progress(f"{target.name}: loading {RECLAIM_EXPIRED + RECLAIM_LIVE:,} rows, half expired")
    base = now_ms()
    await load(target, half_expired_rows(0, RECLAIM_EXPIRED + RECLAIM_LIVE, base))

    async def get(rng: random.Random) -> str:
        row = await target.node.get(key_name(2 * rng.randrange(RECLAIM_LIVE) + 1))
        return "hit" if row is not None else "miss"

    # Without, with, without: the baseline brackets the sweeper's run, so that drift cancels out.
    progress(f"{target.name}: GET load without the sweeper, first half")
    before = await drive(get, CONCURRENCY, math.inf, GET_SECONDS / 2)
    progress(f"{target.name}: GET load with the sweeper")
    with_leg, during_load = await sweep_during(target, base, drive(get, CONCURRENCY, math.inf, GET_SECONDS))
    progress(f"{target.name}: GET load without the sweeper, second half")
    after = await drive(get, CONCURRENCY, math.inf, GET_SECONDS / 2)
    progress(f"{target.name}: the sweeper alone")
    _, alone = await sweep_during(target, base, asyncio.sleep(SWEEPER_ALONE_S))
    return Reclaim(Throughput.of([before, after]), Throughput.of([with_leg]), during_load, alone)
