"""The `kvstore` command as an operator runs it: real processes, real files."""

import asyncio
import fcntl
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from kvstore.cluster.ports import free_port
from tests.support import rawdb
from tests.support.fleet import new_shards
from tests.support.server import ServerProcess, write_config


def kvstore(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def sqlite_config(tmp_path: Path, **server: object) -> Path:
    return write_config(tmp_path / "shards.yaml", "sqlite", ["a.db", "b.db"], **server)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"shards": []}, "shards: no shards configured"),
        ({"shards": [{"name": "s0", "backend": "oracle", "primary": "x"}]}, "shards[0].backend: unknown backend"),
        ({"shards": [{"name": "s0", "backend": "postgres", "primary": "http://x/db"}]}, "shards[0].primary: bad DSN"),
    ],
)
def test_bad_config_exits_with_one_clear_line(tmp_path: Path, document: object, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(document))
    result = kvstore("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_shards_init_is_idempotent(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    for _ in range(2):
        result = kvstore("shards", "init", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["s0: schema ok (sqlite)", "s1: schema ok (sqlite)"]


def test_newer_schema_stops_the_start(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, startup_timeout_s=1)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    with sqlite3.connect(tmp_path / "b.db") as db:
        db.execute("UPDATE kvstore_meta SET value = '99' WHERE name = 'schema_version'")
    result = kvstore("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode != 0
    assert "s1/primary: schema version 99 found" in result.stderr and "upgrade kvstore" in result.stderr


def test_foreign_store_table_stops_the_start(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path, startup_timeout_s=1)
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("CREATE TABLE store (id INTEGER PRIMARY KEY, payload TEXT)")
    result = kvstore("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode != 0
    assert "table 'store' exists but was not created by kvstore" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreachable_shard_at_start_is_named_in_one_line(tmp_path: Path, workers: str) -> None:
    dead = f"postgresql://kvstore@127.0.0.1:{free_port()}/kvstore"
    config = write_config(tmp_path / "shards.yaml", "postgres", [dead], startup_timeout_s=1, connect_timeout_s=0.5)
    started = time.monotonic()
    result = kvstore("serve", "--config", str(config), "--port", str(free_port()), "--workers", workers)
    assert result.returncode != 0
    assert time.monotonic() - started < 20
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    causes = [line["msg"] for line in lines if "shard s0: unreachable at start-up" in line["msg"]]
    assert 1 <= len(causes) <= int(workers), result.stderr  # a second worker may be stopped before it gives up
    assert "Traceback" not in result.stderr and "startup complete" not in result.stderr


def test_a_busy_port_stops_the_start_before_any_shard_opens(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kvstore("serve", "--config", str(config), "--port", str(port))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not (tmp_path / "a.db").exists(), "no shard was opened"


@pytest.mark.parametrize("sweeper", [True, False])
def test_sigterm_shuts_down_gracefully(tmp_path: Path, sweeper: bool) -> None:
    config = write_config(tmp_path / "shards.yaml", "sqlite", ["a.db", "b.db"], sweeper={"enabled": sweeper})
    server = ServerProcess(config).start()
    assert server.process is not None
    with httpx.Client(base_url=server.url) as client:
        assert client.put("/v1/kv/x", content=b"1").status_code == 201
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down cleanly, so the status is "terminated".
    assert server.process.wait(15) in (0, -signal.SIGTERM)
    assert '"msg":"stopped"' in server.log()
    assert "Application shutdown complete" in server.log()


def test_several_workers_share_sqlite_and_metrics(tmp_path: Path) -> None:
    server = ServerProcess(sqlite_config(tmp_path), "--workers", "2").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def write(i: int) -> int:
                return client.put(f"/v1/kv/w{i}", content=b"%d" % i).status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(write, range(200))) == {201}
            assert all(client.get(f"/v1/kv/w{i}").content == b"%d" % i for i in range(200))
            metrics = client.get("/metrics").text
            line = next(
                line for line in metrics.splitlines() if line.startswith('kvstore_http_requests_total{op="put"')
            )
            assert float(line.rsplit(" ", 1)[1]) == 200.0, "both workers' requests are counted"
    finally:
        assert server.stop() in (0, -signal.SIGTERM)


def load_half_expired(tmp_path: Path, rows_per_shard: int) -> None:
    """Rows as PUTs leave them: every other one expired, each with a random sweep slot."""
    now_ms, rng = int(time.time() * 1000), random.Random(3)
    for name in ("a.db", "b.db"):
        with sqlite3.connect(tmp_path / name) as db:
            db.executemany(
                "INSERT INTO store (key, value, ttl, version, sweep_slot) VALUES (?, x'00', ?, 1, ?)",
                [
                    (f"{name}-{i}", now_ms - 1 if i % 2 else now_ms + 3_600_000, rng.randrange(1 << 62))
                    for i in range(rows_per_shard)
                ],
            )


def test_sweep_full_reclaims_dead_rows_in_batches(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    load_half_expired(tmp_path, 3000)
    result = kvstore("sweep", "--config", str(config), "--full", "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["s0: scanned 3000 rows, deleted 1500", "s1: scanned 3000 rows, deleted 1500"]
    again = kvstore("sweep", "--config", str(config), "--full", "--shard", "s1")
    assert again.stdout.splitlines() == ["s1: scanned 1500 rows, deleted 0"]


def test_sweep_sampling_mode_and_a_busy_shard(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    assert kvstore("shards", "init", "--config", str(config)).returncode == 0
    load_half_expired(tmp_path, 2000)
    result = kvstore("sweep", "--config", str(config), "--shard", "s0", "--batch-size", "100")
    assert result.returncode == 0, result.stderr
    deleted = int(result.stdout.split("deleted ")[1].split()[0])
    assert deleted >= 500, result.stdout
    with (tmp_path / "b.db.sweeper-lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        busy = kvstore("sweep", "--config", str(config), "--lock-timeout", "1")
    assert busy.returncode != 0 and 1 <= time.monotonic() - started < 10
    assert "shard s1: another process is sweeping it (still after 1 s" in busy.stderr
    assert kvstore("sweep", "--config", str(config), "--shard", "s9").returncode != 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sweep_full_runs_beside_a_live_server_and_its_sweepers(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    shards = new_shards("s", backend, 2, tmp_path, request)
    config = write_config(tmp_path / "shards.yaml", backend, [shard.location for shard in shards])
    server = ServerProcess(config).start()  # its sweepers are on, with the default settings
    try:
        expired = int(time.time() * 1000) - 1
        for shard in shards:
            dead = [(f"{shard.name}-{i}", b"x", expired, 1, random.randrange(1 << 62)) for i in range(5000)]
            asyncio.run(rawdb.insert_rows(backend, shard.location, dead))
        result = kvstore("sweep", "--config", str(config), "--full", "--lock-timeout", "5")
        assert result.returncode == 0, result.stderr
        assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["s0", "s1"]
        for shard in shards:
            left = asyncio.run(
                rawdb.execute(backend, shard.location, "SELECT COUNT(*) FROM store WHERE ttl <= ?", expired)
            )
            assert left == [(0,)], f"{shard.name}: dead rows left"
        with httpx.Client(base_url=server.url) as client:
            assert client.put("/v1/kv/after", content=b"v").status_code == 201  # the server served throughout
            metrics = client.get("/metrics").text
        assert 'kvstore_sweeper_cycles_total{shard="s0"}' in metrics, "its sweepers were running"
    finally:
        server.stop()
