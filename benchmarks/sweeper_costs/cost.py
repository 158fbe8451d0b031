"""Section 1: sampling cost vs table size."""

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.load import Latency, progress, time_calls
from benchmarks.sweeper_costs.rows import K, key_name, mixed_rows
from benchmarks.sweeper_costs.slot_index import reset
from benchmarks.target import Target, execute, load, now_ms
from kvstore.backends.sql import SAMPLE, SLOT_SPACE

SAMPLE_CALLS = 500
PURGE_CALLS = 500
WARMUP_CALLS = 50
FLAT_TOLERANCE = 0.5  # target: cost at the large size within ±50 % of the small one
EXPLAIN = {"sqlite": "EXPLAIN QUERY PLAN ", "postgres": "EXPLAIN ", "mysql": "EXPLAIN "}


async def sample_plan(target: Target) -> str:
    """How the engine runs the sampling query: it must be a range read of the sweep-slot index."""
    rows = await execute(target, EXPLAIN[target.backend] + SAMPLE, random.randrange(SLOT_SPACE), K)
    if target.backend == "sqlite":
        return "; ".join(str(row[-1]) for row in rows)
    if target.backend == "postgres":
        return "; ".join(str(row[0]).strip().split("  (")[0].lstrip("-> ") for row in rows)
    return "; ".join(f"{row[3]} on {row[5]}" for row in rows)  # access type, index used


@dataclass(frozen=True)
class SizePoint:
    rows: int
    load_s: float
    sample: Latency
    purge: Latency
    plan: str
    disk_reads_per_call: float | None  # MariaDB: InnoDB buffer pool misses (pages read) per timed call


async def measure_size(target: Target, rows: int, load_s: float) -> SizePoint:
    expiring = rows // 2  # even indices below ``rows``

    async def purge_live() -> None:
        keys = [key_name(2 * random.randrange(expiring)) for _ in range(K)]
        if await target.node.purge(keys):
            raise RuntimeError("purge deleted a live row")

    reads_before = await disk_reads(target)
    sample = await time_calls(SAMPLE_CALLS, lambda: target.node.sample_expiring(K), WARMUP_CALLS)
    purge = await time_calls(PURGE_CALLS, purge_live, WARMUP_CALLS)
    reads_after = await disk_reads(target)
    per_call = None
    if reads_before is not None and reads_after is not None:
        per_call = round((reads_after - reads_before) / (WARMUP_CALLS * 2 + SAMPLE_CALLS + PURGE_CALLS), 2)
    return SizePoint(rows, round(load_s, 1), sample, purge, await sample_plan(target), per_call)


async def disk_reads(target: Target) -> int | None:
    """MariaDB's count of pages read from disk into the buffer pool (None on other engines)."""
    if target.backend != "mysql":
        return None
    [(_, value)] = await execute(target, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'")
    return int(value)


async def sampling_cost(target: Target, sizes: Sequence[int]) -> list[SizePoint]:
    await reset(target)
    points = []
    loaded = 0
    for size in sizes:
        progress(f"{target.name}: loading rows {loaded:,}..{size:,}")
        started = time.perf_counter()
        await load(target, mixed_rows(loaded, size, now_ms()))
        loaded = size
        points.append(await measure_size(target, size, time.perf_counter() - started))
        point = points[-1]
        progress(
            f"{target.name}: {size:,} rows: sample {point.sample.mean_ms:.3f} ms, purge {point.purge.mean_ms:.3f} ms"
        )
    return points
