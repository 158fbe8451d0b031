"""Faults injected under a steady read/write load: nothing acknowledged is lost, nothing hangs.

The load: writers PUT fresh keys (value = key), readers GET keys already acknowledged. Every
answer is recorded with its latency; afterwards every acknowledged write must read back.
"""

import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kvstore.cluster.instance import DatabaseInstance
from kvstore.cluster.servers import SERVERS
from tests.conftest import dedicated_shards
from tests.support.server import ServerProcess

REQUEST_TIMEOUT_S = 2.0
SLACK_S = 1.0  # event-loop and HTTP overhead allowed on top of the deadline, as the front end times a request
# What this process sees on top of that: it generates the load, and on a loaded machine (a whole
# `make test` run) its own scheduling and new loopback connections added up to 2.9 s (a request
# the front end answered in time). A hang is many times that.
CLIENT_SLACK_S = 5.0
KILL_CONNECTIONS = {
    "postgres": "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = 'kvstore' AND pid <> pg_backend_pid()",
    "mysql": "SELECT id FROM information_schema.processlist WHERE user = 'kvstore' AND id <> CONNECTION_ID()",
}


@dataclass
class LoadReport:
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    statuses: list[tuple[str, int, float, str]] = field(default_factory=list)  # (op, status, seconds, detail)

    def errors(self, op: str | None = None) -> list[tuple[str, int, float, str]]:
        return [s for s in self.statuses if s[1] >= 500 and (op is None or s[0] == op)]

    @property
    def slowest_s(self) -> float:
        return max(seconds for _, _, seconds, _ in self.statuses)

    def summary(self) -> str:
        """One line for the test's output (pytest -rP shows it): the figures a fault run produced."""
        return (
            f"{len(self.statuses)} requests, {len(self.errors())} answered 5xx, {len(self.acknowledged)} writes"
            f" acknowledged, slowest {self.slowest_s * 1000:.0f} ms"
        )


async def run_load(url: str, seconds: float, fault: Callable[[], Awaitable[None]], fault_at_s: float) -> LoadReport:
    report = LoadReport()
    prefix = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def call(op: str, request: Awaitable[httpx.Response]) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await request
        except httpx.HTTPError as error:  # a front end that died mid-request
            report.statuses.append((op, 599, time.monotonic() - started, repr(error)))
            return None
        detail = response.json().get("detail", "") if response.status_code >= 400 else ""
        report.statuses.append((op, response.status_code, time.monotonic() - started, detail))
        return response

    async def writer(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            key = f"{prefix}-{next(counter)}"
            response = await call("put", client.put(f"/v1/kv/{key}", content=key.encode()))
            if response is not None and response.status_code in (200, 201):
                report.acknowledged[key] = key.encode()

    async def reader(client: httpx.AsyncClient, rng: random.Random) -> None:
        while time.monotonic() < deadline:
            if not report.acknowledged:
                await asyncio.sleep(0.01)
                continue
            key = rng.choice(list(report.acknowledged))
            await call("get", client.get(f"/v1/kv/{key}"))

    async def inject() -> None:
        await asyncio.sleep(fault_at_s)
        await fault()

    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S + 10, limits=limits) as client:
        rng = random.Random(1)
        await asyncio.gather(*(writer(client) for _ in range(4)), *(reader(client, rng) for _ in range(4)), inject())
    return report


def slowest_served_s(server: ServerProcess) -> float:
    """The slowest request as the front end timed it (its access log): from taking the request to
    sending the answer, without the client's side of the connection."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    return max(json.loads(line)["duration_ms"] for line in lines if '"msg":"request"' in line) / 1000


async def assert_all_acknowledged_readable(url: str, report: LoadReport) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for key, value in report.acknowledged.items():
            response = await client.get(f"/v1/kv/{key}")
            assert response.status_code == 200 and response.content == value, key


@pytest.fixture(params=sorted(SERVERS))
def loaded_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, list[DatabaseInstance], ServerProcess]]:
    settings = {"request_timeout_s": REQUEST_TIMEOUT_S, "connect_timeout_s": 1, "access_log": True}
    with dedicated_shards(request.param, tmp_path, **settings) as (
        instances,
        server,
    ):
        yield request.param, instances, server


async def test_connections_killed_by_the_database(
    loaded_cluster: tuple[str, list[DatabaseInstance], ServerProcess],
) -> None:
    backend, instances, server = loaded_cluster

    async def kill_connections() -> None:
        for instance in instances:
            output = await asyncio.to_thread(instance.sql, KILL_CONNECTIONS[backend])
            if backend == "mysql":
                for thread_id in output.split():
                    await asyncio.to_thread(instance.sql, f"KILL CONNECTION {int(thread_id)}")

    report = await run_load(server.url, seconds=4.0, fault=kill_connections, fault_at_s=1.5)
    print(f"{backend}, connections killed: {report.summary()}, served in {slowest_served_s(server):.3f} s at most")
    assert len(report.acknowledged) > 100
    assert slowest_served_s(server) <= REQUEST_TIMEOUT_S + SLACK_S
    assert report.slowest_s <= REQUEST_TIMEOUT_S + CLIENT_SLACK_S
    assert {status for _, status, _, _ in report.statuses} <= {200, 201, 503}
    for op, _, _, detail in report.errors():
        # A write is never retried blindly; a read is retried once and fails only if that retry also
        # met a connection killed before the pool noticed.
        expected = ("may have been applied", "cannot connect") if op == "put" else ("connection lost", "cannot connect")
        assert any(reason in detail for reason in expected), (op, detail)
    reads = [s for s in report.statuses if s[0] == "get"]
    assert len(report.errors("get")) <= max(1, len(reads) // 100), "reads are retried once on a broken connection"
    await assert_all_acknowledged_readable(server.url, report)


async def test_stopped_primary_under_load(loaded_cluster: tuple[str, list[DatabaseInstance], ServerProcess]) -> None:
    _, instances, server = loaded_cluster

    async def stop_and_restart() -> None:
        await asyncio.to_thread(instances[1].stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(instances[1].start)

    report = await run_load(server.url, seconds=5.0, fault=stop_and_restart, fault_at_s=1.0)
    served = slowest_served_s(server)
    print(f"{loaded_cluster[0]}, primary stopped for 1 s: {report.summary()}, served in {served:.3f} s at most")
    assert slowest_served_s(server) <= REQUEST_TIMEOUT_S + SLACK_S
    assert report.slowest_s <= REQUEST_TIMEOUT_S + CLIENT_SLACK_S
    assert report.errors(), "requests for the stopped shard failed"
    assert all(status == 503 for _, status, _, _ in report.errors()), report.errors()[:5]
    successes_after = [s for s in report.statuses[-50:] if s[1] in (200, 201)]
    assert len(successes_after) == 50, "service came back without restarting kvstore"
    await assert_all_acknowledged_readable(server.url, report)


async def test_kill_9_front_end_loses_no_acknowledged_write(config_file: Path) -> None:
    first = ServerProcess(config_file).start()

    async def kill_front_end() -> None:
        assert first.process is not None
        first.process.kill()

    report = await run_load(first.url, seconds=2.5, fault=kill_front_end, fault_at_s=1.0)
    print(f"{config_file.parent.name}, front end killed: {report.summary()}")
    first.stop()
    assert len(report.acknowledged) > 50
    second = ServerProcess(config_file).start()
    try:
        await assert_all_acknowledged_readable(second.url, report)
    finally:
        second.stop()
