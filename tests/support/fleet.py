"""Shards for resharding tests: empty databases on any engine, configs naming them, and what
their tables hold, read straight from the databases."""

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kvstore.backends import ENGINES
from kvstore.cluster.servers import SERVERS
from kvstore.ring import HashRing, RingNode
from tests.conftest import empty_database, require, session_instances
from tests.support import rawdb

# Short timings: front ends notice a new ring record within 0.2 s (before that, shards refuse them).
SERVER = {"request_timeout_s": 2, "ring_poll_interval_s": 0.2}
EAGER_SWEEPER = {"tick_ms": 10, "cycle_budget_ms": 5}  # purging all the time, to prove its guard


@dataclass(frozen=True)
class Shard:
    name: str
    backend: str
    location: str

    def spec(self) -> dict[str, str]:
        return {"name": self.name, "backend": self.backend, "primary": self.location}


def new_shards(
    prefix: str, backend: str, count: int, tmp_path: Path, request: pytest.FixtureRequest, start: int = 0
) -> list[Shard]:
    """``count`` shards named ``<prefix><n>`` on empty databases: SQLite files, or new databases
    on the session's PostgreSQL / MariaDB instances."""
    return [
        Shard(f"{prefix}{start + index}", backend, location)
        for index, location in enumerate(_empty_databases(backend, count, tmp_path, request))
    ]


def _empty_databases(backend: str, count: int, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if ENGINES[backend].embedded:
        return [str(tmp_path / f"{uuid.uuid4().hex[:8]}.db") for _ in range(count)]
    require(SERVERS[backend].find_binaries)
    instances = session_instances(backend, request)
    return [empty_database(instances[index % len(instances)]) for index in range(count)]


def write_config(path: Path, shards: list[Shard]) -> Path:
    document = {"server": SERVER, "sweeper": EAGER_SWEEPER, "shards": [shard.spec() for shard in shards]}
    path.write_text(yaml.safe_dump(document))
    return path


def ring(shards: list[Shard]) -> HashRing:
    return HashRing(RingNode(shard.name) for shard in shards)


def kvstore(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an admin would: a separate process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


async def placement(shards: list[Shard]) -> dict[str, list[str]]:
    """Which shards hold a live row for each key."""
    found: dict[str, list[str]] = {}
    for shard in shards:
        now_ms = int(time.time() * 1000)
        for (key,) in await rawdb.execute(shard.backend, shard.location, "SELECT key FROM store WHERE ttl > ?", now_ms):
            found.setdefault(key.decode() if isinstance(key, bytes) else key, []).append(shard.name)
    return found
