"""Multi-key operations, measured through a real ``kvstore serve`` on a fresh 2-shard cluster.

``python -m benchmarks.multikey --backend postgres`` (a few minutes):

- **Listing page latency by table size**: two clusters of 2 shards, one with 100k rows per shard,
  one with 1M, each vacuumed and analyzed after the load and served by its own ``kvstore serve``;
  pages of ``limit`` keys from random positions are asked of both in alternation (ABBA), so the
  machine's noise falls on both alike. A page is one index range scan of at most ``limit`` rows
  per shard, so its latency should not grow with the table: the figure is the ratio of the two
  medians (1.0 = flat).
- **A batch of 100 vs 100 single requests**, GETs and PUTs, on the same keys: one POST
  /v1/batch, against the same 100 keys sent one after another on one connection, and all at
  once on 100 connections. Rounds alternate between the three (ABC, CBA) so drift falls on all.
  Figures: median wall time per 100 keys and the server's CPU per key, as ratios to the batch.
"""

import asyncio
import base64
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import httpx

from benchmarks import deployment
from benchmarks.cpu import tree_cpu_s
from benchmarks.load import progress
from tests.support.rawdb import execute

SMALL, LARGE = 100_000, 1_000_000  # rows per shard
SHARDS = 2
PAGES = 300
ROUNDS = 40
BATCH = 100


def key_of(index: int) -> str:
    return f"chat/{index:08d}"


async def page_latency(
    client: httpx.AsyncClient, url: str, rows: int, limit: int, values: bool, rng: random.Random
) -> float:
    params = {"prefix": "chat/", "start_after": key_of(rng.randrange(rows - limit)), "limit": str(limit)}
    if values:
        params["values"] = "true"
    started = time.perf_counter()
    response = await client.get(f"{url}/v1/kv", params=params)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and len(response.json()["items"]) == limit, response.text[:300]
    return elapsed


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


async def listing(urls: dict[int, str]) -> dict[str, Any]:
    """Page latencies on every cluster (by rows per shard), asked in ABBA order."""
    rng = random.Random(1)
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for limit, values in ((100, False), (1000, False), (100, True)):
            page = f"limit {limit}{', values' if values else ''}"
            latencies: dict[int, list[float]] = {rows: [] for rows in urls}
            for round_ in range(PAGES + PAGES // 5):  # the first fifth warms the caches
                order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
                for rows in order:
                    latency = await page_latency(client, urls[rows], rows * SHARDS, limit, values, rng)
                    if round_ >= PAGES // 5:
                        latencies[rows].append(latency)
            figures[page] = {f"{rows:,} rows/shard": summary(found) for rows, found in latencies.items()}
            small, large = (statistics.median(found) for found in latencies.values())
            figures[page]["x_large_vs_small_p50"] = round(large / small, 2)
            progress(f"  {page}: {figures[page]}")
    return figures


async def batch_vs_singles(url: str, pid: int, total_keys: int) -> dict[str, Any]:
    rng = random.Random(7)
    value = base64.b64encode(b"v" * 100).decode()
    limits = httpx.Limits(max_connections=BATCH, max_keepalive_connections=BATCH)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def batched(keys: list[str], write: bool) -> None:
            ops = [{"op": "put", "key": k, "value_b64": value} if write else {"op": "get", "key": k} for k in keys]
            response = await client.post(f"{url}/v1/batch", json={"ops": ops})
            assert response.status_code == 200 and {r["status"] for r in response.json()["results"]} <= {200, 201}

        async def one(key: str, write: bool) -> None:
            target = f"{url}/v1/kv/{key}"
            response = await (client.put(target, content=b"v" * 100) if write else client.get(target))
            assert response.status_code in (200, 201), response.text

        async def sequential(keys: list[str], write: bool) -> None:
            for key in keys:
                await one(key, write)

        async def concurrent(keys: list[str], write: bool) -> None:
            await asyncio.gather(*(one(key, write) for key in keys))

        ways: dict[str, Callable[[list[str], bool], Awaitable[None]]] = {
            "batch of 100": batched,
            "100 singles, one after another": sequential,
            "100 singles, all at once": concurrent,
        }
        figures: dict[str, Any] = {}
        for write in (False, True):
            kind = "PUT" if write else "GET"
            wall: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, float] = dict.fromkeys(ways, 0.0)
            await concurrent([key_of(rng.randrange(total_keys)) for _ in range(BATCH)], write)  # connections up
            for round_ in range(ROUNDS):
                order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
                keys = [key_of(rng.randrange(total_keys)) for _ in range(BATCH)]
                for name in order:
                    cpu_before, started = tree_cpu_s(pid), time.perf_counter()
                    await ways[name](keys, write)
                    wall[name].append(time.perf_counter() - started)
                    cpu[name] += tree_cpu_s(pid) - cpu_before
            base = statistics.median(wall["batch of 100"])
            base_cpu = cpu["batch of 100"]
            figures[kind] = {
                name: {
                    "ms_per_100": round(statistics.median(times) * 1000, 2),
                    "x_batch_time": round(statistics.median(times) / base, 2),
                    "server_cpu_us_per_key": round(cpu[name] / (ROUNDS * BATCH) * 1e6, 1),
                    "x_batch_cpu": round(cpu[name] / base_cpu, 2) if base_cpu else None,
                }
                for name, times in wall.items()
            }
            progress(f"  {kind}: " + ", ".join(f"{n}: {f['ms_per_100']} ms" for n, f in figures[kind].items()))
    return figures


@contextmanager
def loaded_cluster(backend: str, directory: Path, rows_per_shard: int) -> Iterator[Path]:
    """A 2-shard cluster with ``rows_per_shard`` rows per shard, vacuumed and analyzed: its shards.yaml."""
    with deployment.cluster(backend, directory, SHARDS, 0, True) as base:
        settings = deployment.settings_of(base)
        progress(f"loading {rows_per_shard * SHARDS:,} rows")
        rows = deployment.persistent_rows(map(key_of, range(rows_per_shard * SHARDS)), b"m" * 100)
        asyncio.run(deployment.load(settings, rows))
        if backend == "postgres":  # a fresh bulk load leaves hint bits and the visibility map to set
            for shard in settings.shards:
                asyncio.run(execute(backend, shard.primary, "VACUUM ANALYZE store"))
        yield base


def run(backend: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"backend": backend, "shards": SHARDS}
    with tempfile.TemporaryDirectory(prefix=f"kvmulti-{backend}-") as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # PostgreSQL runs as its own OS user and must reach the clusters below
        with contextlib.ExitStack() as stack:
            urls, pids = {}, {}
            for rows in (SMALL, LARGE):
                base = stack.enter_context(loaded_cluster(backend, work / f"cluster-{rows}", rows))
                config = deployment.variant(base, work / f"serve-{rows}.yaml", workers=1, sweeper=False, replicas=False)
                server = stack.enter_context(deployment.serving(config))
                assert server.process is not None
                urls[rows], pids[rows] = server.url, server.process.pid
            figures["listing"] = asyncio.run(listing(urls))
            figures["batch"] = asyncio.run(batch_vs_singles(urls[SMALL], pids[SMALL], SMALL * SHARDS))
    return figures


def table(figures: dict[str, Any]) -> str:
    listing = figures["listing"]
    sizes = [name for name in next(iter(listing.values())) if name != "x_large_vs_small_p50"]
    lines = ["| listing page | " + " | ".join(f"{size}: p50 / p99 ms" for size in sizes) + " | p50 ratio |"]
    lines.append("|---|" + "---|" * (len(sizes) + 1))
    for page, by_size in listing.items():
        cells = [f"{by_size[size]['p50_ms']} / {by_size[size]['p99_ms']}" for size in sizes]
        lines.append(f"| {page} | " + " | ".join(cells) + f" | {by_size['x_large_vs_small_p50']}x |")
    lines += [
        "",
        "| 100 keys as | GET ms (x batch) | GET server CPU µs/key | PUT ms (x batch) | PUT server CPU µs/key |",
    ]
    lines.append("|---|---|---|---|---|")
    for name in figures["batch"]["GET"]:
        get, put = figures["batch"]["GET"][name], figures["batch"]["PUT"][name]
        lines.append(
            f"| {name} | {get['ms_per_100']} ({get['x_batch_time']}x) | {get['server_cpu_us_per_key']}"
            f" | {put['ms_per_100']} ({put['x_batch_time']}x) | {put['server_cpu_us_per_key']} |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--backend", type=click.Choice(["postgres", "mysql"]), default="postgres", show_default=True)
def main(backend: str) -> None:
    """Listing page latency at 100k and 1M rows per shard; a batch of 100 against 100 singles."""
    click.echo(table(run(backend)))


if __name__ == "__main__":
    main()
