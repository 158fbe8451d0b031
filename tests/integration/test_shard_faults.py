"""A shard whose database is down or frozen answers 503 + Retry-After fast; the others keep serving.

Each test gets its own database instances (it stops them) and its own `kvstore serve`.
"""

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kvstore.cluster.instance import DatabaseInstance
from kvstore.cluster.servers import SERVERS
from kvstore.config import load_settings
from tests.conftest import dedicated_shards
from tests.support.server import ServerProcess

REQUEST_TIMEOUT_S = 1.0


@pytest.fixture(params=sorted(SERVERS))
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[DatabaseInstance], ServerProcess]]:
    settings = {"request_timeout_s": REQUEST_TIMEOUT_S, "connect_timeout_s": 0.5, "retry_after_s": 2}
    with dedicated_shards(request.param, tmp_path, **settings) as (instances, server):
        try:
            yield instances, server
        finally:
            for instance in instances:  # a test that failed while they were frozen
                if (pid := instance.pid()) is not None:
                    freeze(pid, signal.SIGCONT)


def freeze(pid: int, sig: signal.Signals) -> None:
    """Signal a server and its children (PostgreSQL backends run in sessions of their own)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for target in (pid, *map(int, children)):
        os.kill(target, sig)


def key_on(config: Path, shard: str) -> str:
    ring = load_settings(config, environ={}).ring()
    return next(f"key-{i}" for i in range(10_000) if ring.owner(f"key-{i}") == shard)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed_s: float, shard: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["shard"] == shard
    assert elapsed_s < REQUEST_TIMEOUT_S + 1.0


def test_stopped_shard_gives_fast_503_and_recovers(cluster: tuple[list[DatabaseInstance], ServerProcess]) -> None:
    instances, server = cluster
    down, up = key_on(server.config, "s1"), key_on(server.config, "s0")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.put(f"/v1/kv/{down}", content=b"before").status_code == 201
        instances[1].stop()

        for call in (lambda: client.get(f"/v1/kv/{down}"), lambda: client.put(f"/v1/kv/{down}", content=b"x")):
            response, elapsed = timed(call)
            assert_unavailable(response, elapsed, "s1")
        assert client.put(f"/v1/kv/{up}", content=b"still here").status_code in (200, 201)
        assert client.get(f"/v1/kv/{up}").content == b"still here"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["shards"]["s0"] == "up" and ready.json()["shards"]["s1"].startswith("down")
        assert "replicas" not in ready.json(), "as when ready: no replicas, no key"
        status, elapsed = timed(lambda: client.get("/v1/status"))
        assert status.status_code == 200 and elapsed < 5, "the console's view reports a down shard, fast"
        shards = {shard["name"]: shard for shard in status.json()["shards"]}
        assert status.json()["ok"] is False and shards["s0"]["ok"] and shards["s0"]["rows"]["total"] >= 1
        assert shards["s1"]["primary"]["reachable"] is False and shards["s1"]["rows"] is None

        instances[1].start()
        deadline = time.monotonic() + 15
        while client.get(f"/v1/kv/{down}").status_code != 200:
            assert time.monotonic() < deadline, "shard did not come back"
            time.sleep(0.2)
        assert client.get(f"/v1/kv/{down}").content == b"before"
        assert client.get("/readyz").status_code == 200


def test_frozen_shard_times_out_within_the_deadline(cluster: tuple[list[DatabaseInstance], ServerProcess]) -> None:
    instances, server = cluster
    frozen, fine = key_on(server.config, "s0"), key_on(server.config, "s1")
    pid = instances[0].pid()
    assert pid is not None
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.put(f"/v1/kv/{frozen}", content=b"v")
        freeze(pid, signal.SIGSTOP)
        try:
            for call in (lambda: client.get(f"/v1/kv/{frozen}"), lambda: client.put(f"/v1/kv/{frozen}", content=b"w")):
                response, elapsed = timed(call)
                assert_unavailable(response, elapsed, "s0")
                # Machine-readable for clients: only a write whose statement was sent may have been applied.
                problem = response.json()
                sent = "may have been applied" in problem["detail"]
                assert (problem.get("write_outcome") == "unknown") == sent, problem
            assert client.put(f"/v1/kv/{fine}", content=b"ok").status_code in (200, 201)
        finally:
            freeze(pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while client.get(f"/v1/kv/{frozen}").status_code != 200:
            assert time.monotonic() < deadline, "shard did not come back after SIGCONT"
            time.sleep(0.2)
