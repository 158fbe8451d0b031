"""The system under test: a real cluster from ``kvstore cluster up``, preloaded, and ``kvstore serve``.

The cluster is started with the CLI a user would run (its ``shards.yaml`` is the base config);
each server variant (sweeper on or off, with or without replicas, N workers) is a config derived
from it. Rows are bulk-loaded as PUTs would leave them (persistent, no sweep slot), each on the
shard the ring gives its key, then the harness waits until every replica has replayed them.
"""

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kvstore.backends import PoolSettings, create_node
from kvstore.backends.base import PERSISTENT_TTL
from kvstore.config import Settings, load_settings
from tests.support.rawdb import execute, insert_rows
from tests.support.server import ServerProcess

Row = tuple[str, bytes, int, int, int | None]
_LOAD_CHUNK = 10_000
_CATCH_UP_TIMEOUT_S = 300.0
_POOL = PoolSettings(min_size=1, max_size=2, connect_timeout_s=5, statement_timeout_s=600)
ANALYZE = {"postgres": "ANALYZE store", "mysql": "ANALYZE TABLE store"}


def kvstore_cli(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "kvstore", *arguments], check=True, stdout=subprocess.DEVNULL)


@contextmanager
def cluster(backend: str, directory: Path, shards: int, replicas: int, durable: bool) -> Iterator[Path]:
    """``kvstore cluster up`` in ``directory``; yields its shards.yaml; ``down --remove`` at the end."""
    durability = "--durable" if durable else "--no-durable"
    up = ["cluster", "up", "--backend", backend, "--dir", str(directory), "--shards", str(shards)]
    kvstore_cli(*up, "--replicas", str(replicas), durability)
    try:
        yield directory / "shards.yaml"
    finally:
        kvstore_cli("cluster", "down", "--dir", str(directory), "--remove")


def settings_of(config: Path) -> Settings:
    return load_settings(config, environ={})


def persistent_rows(keys: Iterable[str], value: bytes) -> Iterator[Row]:
    version = time.time_ns() // 1000
    for key in keys:
        yield key, value, PERSISTENT_TTL, version, None


def expired_rows(keys: Iterable[str], value: bytes, slots: Iterator[int]) -> Iterator[Row]:
    """Rows that expired an hour ago, each with a sweep slot: work for the sweeper."""
    now_ms = time.time_ns() // 1_000_000
    for key in keys:
        yield key, value, now_ms - 3_600_000, now_ms * 1000, next(slots)


async def load(settings: Settings, rows: Iterable[Row]) -> None:
    """Insert each row on its key's shard, in chunks, then refresh the planner statistics."""
    ring = settings.ring()
    locations = {shard.name: shard.primary for shard in settings.shards}
    backend = settings.shards[0].backend
    pending: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        batch = pending[ring.owner(row[0])]
        batch.append(row)
        if len(batch) >= _LOAD_CHUNK:
            await insert_rows(backend, locations[ring.owner(row[0])], batch)
            batch.clear()
    for name, batch in pending.items():
        if batch:
            await insert_rows(backend, locations[name], batch)
    for location in locations.values():
        await execute(backend, location, ANALYZE[backend])


async def count(settings: Settings, predicate: str) -> int:
    """Rows matching ``predicate`` over every shard primary (``?`` is now in epoch ms)."""
    backend = settings.shards[0].backend
    now_ms = time.time_ns() // 1_000_000
    total = 0
    for shard in settings.shards:
        [(found,)] = await execute(backend, shard.primary, f"SELECT COUNT(*) FROM store WHERE {predicate}", now_ms)
        total += int(found)
    return total


async def wait_for_replicas(settings: Settings) -> None:
    """Until every replica has replayed its primary's current position (bounded)."""
    deadline = time.monotonic() + _CATCH_UP_TIMEOUT_S
    for shard in settings.shards:
        primary = create_node(shard.backend, shard.name, "primary", shard.primary, _POOL)
        replicas = [create_node(shard.backend, shard.name, "replica", dsn, _POOL) for dsn in shard.replicas]
        try:
            for node in (primary, *replicas):
                await node.open()
            position = await primary.replication_position()
            for replica in replicas:
                while not await replica.has_replayed(position):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{shard.name}: replica not caught up in {_CATCH_UP_TIMEOUT_S:g} s")
                    await asyncio.sleep(0.2)
        finally:
            for node in (primary, *replicas):
                await node.close(5)


def variant(base: Path, path: Path, *, workers: int, sweeper: bool, replicas: bool, batching: bool = True) -> Path:
    """A config for one server variant, derived from the cluster's shards.yaml."""
    document: dict[str, Any] = yaml.safe_load(base.read_text())
    if not replicas:
        for shard in document["shards"]:
            shard["replicas"] = []
    document["server"] = {"workers": workers, "request_timeout_s": 10, "batching": batching}
    document["sweeper"] = {"enabled": sweeper}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextmanager
def serving(config: Path) -> Iterator[ServerProcess]:
    """``kvstore serve`` on a free port (workers from the config) until the block ends."""
    server = ServerProcess(config).start(timeout_s=60)
    try:
        yield server
    finally:
        server.stop()
