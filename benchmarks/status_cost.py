"""What the console's cluster view costs a shard: ``status.count_table`` (rows, dead rows) against
``status.readiness`` (one ping), and what a count does to foreground GETs on the same shard.

One SQLite shard (the embedded default, where a count reads every row) in a temp dir, loaded with
N rows (half with an expiry). For each N: the median time of ``count_table`` and of ``readiness``
over 5 calls, then 300 sequential GETs through the shard's node alone and while counts run back to
back beside them: p50 and max of one GET. This is why ``/v1/status`` recounts at most every
``ROWS_MAX_AGE_S`` (kvstore/http/cluster.py).

Run from the repository root::

    .venv/bin/python -m benchmarks.status_cost --rows 1000 100000 1000000
"""

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kvstore.backends.base import PERSISTENT_TTL
from kvstore.config import parse_settings
from kvstore.router import Router
from kvstore.status import count_table, readiness

GETS = 300


def load(path: Path, rows: int) -> None:
    now_ms, rng = int(time.time() * 1000), random.Random(7)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO store (key, value, ttl, version, sweep_slot) VALUES (?, x'00', ?, 1, ?)",
            (
                (f"k{i}", now_ms + 3_600_000, rng.randrange(1 << 62)) if i % 2 else (f"k{i}", PERSISTENT_TTL, None)
                for i in range(rows)
            ),
        )


async def median_s(call: Callable[[], Awaitable[object]], times: int = 5) -> float:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        taken.append(time.perf_counter() - started)
    return statistics.median(taken)


async def gets(router: Router, rows: int) -> tuple[float, float]:
    node, rng, taken = router.shards["s0"].primary, random.Random(3), []
    for _ in range(GETS):
        started = time.perf_counter()
        await node.get(f"k{rng.randrange(rows)}")
        taken.append(time.perf_counter() - started)
    return statistics.median(taken), max(taken)


async def measure(rows: int) -> str:
    directory = Path(tempfile.mkdtemp(prefix="kvstore-status-cost-"))
    document = {"shards": [{"name": "s0", "backend": "sqlite", "primary": str(directory / "s0.db")}]}
    router = Router(parse_settings(document, environ={}, base_dir=directory))
    shard = router.shards["s0"]
    try:
        await shard.open()
        await shard.primary.ensure_schema()
        load(directory / "s0.db", rows)
        count_s = await median_s(lambda: count_table(shard, 60))
        ready_s = await median_s(lambda: readiness(router))
        alone = await gets(router, rows)
        stop = asyncio.Event()

        async def count_until_stopped() -> None:
            while not stop.is_set():
                await count_table(shard, 60)

        counting = asyncio.create_task(count_until_stopped())
        beside = await gets(router, rows)
        stop.set()
        await counting
    finally:
        await router.close(5)
    return (
        f"| {rows:,} | {count_s * 1000:.1f} ms | {ready_s * 1000:.2f} ms"
        f" | {alone[0] * 1000:.2f} / {alone[1] * 1000:.1f} ms | {beside[0] * 1000:.2f} / {beside[1] * 1000:.1f} ms |"
    )


async def main(row_counts: list[int]) -> None:
    print("| rows | count_table | readiness | GET p50 / max alone | GET p50 / max beside counts |")
    print("|---|---|---|---|---|")
    for rows in row_counts:
        print(await measure(rows), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    asyncio.run(main(parser.parse_args().rows))
