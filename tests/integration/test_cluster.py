"""``kvstore cluster`` as a person trying kvstore runs it: real servers, the databases' own replication.

Each test gets its own cluster (1 shard x 1 replica) in a fresh directory, which the fixture
stops and removes whatever happens. The directory is not pytest's ``tmp_path``: as root,
PostgreSQL runs as the ``postgres`` OS user, which cannot traverse pytest's private (0700)
temp directories, and another pytest session re-privatises them when it starts.
"""

import asyncio
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kvstore.backends import PoolSettings, create_node
from kvstore.cluster import LocalCluster
from kvstore.cluster.binaries import find_mariadb_binaries, find_postgres_binaries
from kvstore.cluster.layout import STATE_FILE
from kvstore.config import load_settings
from tests.conftest import require, unavailable
from tests.support.rawdb import execute

FINDERS: dict[str, Callable[[], Any]] = {"postgres": find_postgres_binaries, "mysql": find_mariadb_binaries}
# The replica's own word that it replicates: PostgreSQL is in recovery only as a standby;
# MariaDB's Slave_running is ON only while both replication threads run.
REPLICA_PROBES = {
    "postgres": ("SELECT pg_is_in_recovery()", True),
    "mysql": (
        "SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'SLAVE_RUNNING'",
        "ON",
    ),
}
REPLICATION_TIMEOUT_S = 10.0
POOL = PoolSettings(min_size=1, max_size=2, connect_timeout_s=2, statement_timeout_s=5)


def kvstore(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


@pytest.fixture(params=sorted(FINDERS))
def cluster_dir(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """(backend, directory for a cluster); the cluster in it is stopped and the directory removed after."""
    require(FINDERS[request.param])
    parent = Path(tempfile.mkdtemp(prefix="kvstore-cluster-test-"))
    parent.chmod(0o711)
    directory = parent / "cluster"
    try:
        yield request.param, directory
    finally:
        if (directory / STATE_FILE).exists():
            LocalCluster.load(directory).down()
        shutil.rmtree(parent)


async def test_a_replica_follows_its_primary_and_down_stops_everything(cluster_dir: tuple[str, Path]) -> None:
    backend, directory = cluster_dir
    up = kvstore(
        "cluster", "up", "--backend", backend, "--shards=1", "--replicas=1", f"--dir={directory}", "--no-durable"
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "s0/replica1: caught up with s0/primary" in up.stdout

    shard = load_settings(directory / "shards.yaml", environ={}).shards[0]
    assert shard.backend == backend and len(shard.replicas) == 1
    probe, answer = REPLICA_PROBES[backend]
    assert await execute(backend, shard.replicas[0], probe) == [(answer,)]
    assert await replicated_after(backend, shard.primary, shard.replicas[0]) < REPLICATION_TIMEOUT_S

    status = kvstore("cluster", "status", "--dir", str(directory), "--json")
    assert status.returncode == 0, status.stderr
    instances = {instance["name"]: instance for instance in json.loads(status.stdout)["instances"]}
    assert [instances[name]["running"] for name in ("s0/primary", "s0/replica1")] == [True, True]
    lag = instances["s0/replica1"]["replication"]
    distance = lag["bytes_behind"] if backend == "postgres" else lag["transactions_behind"]
    assert isinstance(distance, int) and distance >= 0, lag
    assert isinstance(lag["seconds_behind"], float), lag
    table = kvstore("cluster", "status", "--dir", str(directory))
    assert table.returncode == 0 and "s0/replica1" in table.stdout

    down = kvstore("cluster", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(directory) == ""


def processes_mentioning(directory: Path) -> str:
    """``pgrep -af`` lines of every process whose command line names ``directory``."""
    return subprocess.run(["pgrep", "-af", str(directory)], capture_output=True, text=True, check=False).stdout


async def replicated_after(backend: str, primary_dsn: str, replica_dsn: str) -> float:
    """Write a row on the primary; return the seconds until the replica serves it."""
    primary = create_node(backend, "s0", "primary", primary_dsn, POOL)
    replica = create_node(backend, "s0", "replica", replica_dsn, POOL)
    await primary.open()
    await replica.open()
    try:
        written = time.monotonic()
        await primary.create("replicated-key", b"from the primary", None)
        while (row := await replica.get("replicated-key")) is None:
            assert time.monotonic() - written < REPLICATION_TIMEOUT_S, "row not replicated in time"
            await asyncio.sleep(0.05)
        assert row.value == b"from the primary"
        return time.monotonic() - written
    finally:
        await asyncio.gather(primary.close(1), replica.close(1))


def test_cluster_errors_are_one_line(tmp_path: Path) -> None:
    missing = kvstore("cluster", "status", "--dir", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"Error: {tmp_path / 'nothing'}: no cluster here (no cluster.json)"]
    require(find_mariadb_binaries)
    with socket_listening() as port:
        busy = kvstore("cluster", "up", "--backend", "mysql", "--dir", str(tmp_path / "c"), "--base-port", str(port))
    assert busy.returncode == 1
    assert len(busy.stderr.strip().splitlines()) == 1
    assert f"port {port} is in use" in busy.stderr
    assert not (tmp_path / "c").exists()


@contextmanager
def socket_listening() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        yield port


@contextmanager
def private_directory() -> Iterator[Path]:
    """A directory as ``mktemp -d`` makes it (0700, ours), removed afterwards with any cluster in it."""
    directory = Path(tempfile.mkdtemp(prefix="kvstore-private-"))
    try:
        yield directory
    finally:
        for state in directory.rglob(STATE_FILE):
            LocalCluster.load(state.parent).down()
        shutil.rmtree(directory)


def as_root_with_postgres() -> None:
    if os.geteuid() != 0:  # as another user, PostgreSQL runs as that user: there is nothing to grant
        unavailable("the test needs root (CI runs as root)")
    require(find_postgres_binaries)


def test_a_private_directory_is_granted_to_the_postgres_user_and_nothing_more() -> None:
    as_root_with_postgres()
    with private_directory() as directory:
        up = kvstore("cluster", "up", "--backend", "postgres", "--shards=1", "--replicas=1", f"--dir={directory}")
        assert up.returncode == 0, up.stdout + up.stderr
        status = directory.stat()
        assert stat.S_IMODE(status.st_mode) == 0o710, "search permission only, for the group alone"
        assert (status.st_uid, grp.getgrgid(status.st_gid).gr_name) == (0, "postgres")
        assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o1777, "nothing above it changed"


def test_a_private_directory_above_is_named_not_changed() -> None:
    as_root_with_postgres()
    with private_directory() as parent:
        before = parent.stat()
        up = kvstore("cluster", "up", "--backend", "postgres", "--shards=1", "--replicas=0", f"--dir={parent / 'c'}")
        assert up.returncode == 1
        assert f"{parent}: the 'postgres' OS user cannot traverse it (mode 0700" in up.stderr, up.stderr
        assert f"chmod o+x {parent}" in up.stderr and "Traceback" not in up.stderr
        after = parent.stat()
        assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
