"""Read replicas on real replicated clusters (PostgreSQL streaming, MariaDB GTID), through kvstore serve.

Per backend: one shard with one replica. Two front ends run on it: `lenient` keeps a lagging
replica in rotation (max_replica_lag_s 60), `strict` takes it out past 1 s.
"""

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kvstore.client import Client
from kvstore.cluster import LocalCluster
from kvstore.cluster.binaries import find_mariadb_binaries, find_postgres_binaries
from kvstore.cluster.instance import DatabaseInstance
from kvstore.positions import encode_read_after
from tests.conftest import require
from tests.support.server import ServerProcess

FINDERS: dict[str, Callable[[], Any]] = {"postgres": find_postgres_binaries, "mysql": find_mariadb_binaries}
DELAY_S = 3
# How many reads a replica served, by its own statistics.
READ_COUNTERS = {
    "postgres": "SELECT xact_commit FROM pg_stat_database WHERE datname = 'kvstore'",
    "mysql": "SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'COM_SELECT'",
}
DELAY = {
    "postgres": (
        [f"ALTER SYSTEM SET recovery_min_apply_delay = '{DELAY_S}s'", "SELECT pg_reload_conf()"],
        ["ALTER SYSTEM RESET recovery_min_apply_delay", "SELECT pg_reload_conf()"],
    ),
    "mysql": (
        ["STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {DELAY_S}", "START SLAVE"],
        ["STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"],
    ),
}


@dataclass
class Replicated:
    backend: str
    cluster: LocalCluster
    lenient: ServerProcess
    strict: ServerProcess

    @property
    def replica(self) -> DatabaseInstance:
        return self.cluster.instances["s0/replica1"]


def serve(cluster: LocalCluster, path: Path, max_lag_s: float) -> ServerProcess:
    document = yaml.safe_load(cluster.config_path.read_text())
    document["server"] = {"max_replica_lag_s": max_lag_s, "replica_probe_interval_s": 0.2, "request_timeout_s": 3}
    path.write_text(yaml.safe_dump(document))
    return ServerProcess(path).start()


@pytest.fixture(scope="module", params=sorted(FINDERS))
def replicated(request: pytest.FixtureRequest) -> Iterator[Replicated]:
    require(FINDERS[request.param])
    parent = Path(tempfile.mkdtemp(prefix="kvstore-replicas-test-"))
    parent.chmod(0o711)  # PostgreSQL runs as its own OS user and must reach the data dirs
    cluster = LocalCluster.create(request.param, parent / "cluster", shards=1, replicas=1, durable=False)
    servers: list[ServerProcess] = []
    try:
        cluster.up()
        servers = [serve(cluster, parent / "lenient.yaml", 60), serve(cluster, parent / "strict.yaml", 1)]
        yield Replicated(request.param, cluster, *servers)
    finally:
        for server in servers:
            server.stop()
        cluster.down(remove=True)
        shutil.rmtree(parent, ignore_errors=True)


def eventually(check: Callable[[], bool], timeout_s: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def replica_in_rotation(server: ServerProcess) -> bool:
    return bool(httpx.get(server.url + "/readyz").json().get("replicas", {}).get("s0/replica1", "").startswith("up"))


def degraded_without_replica(server: ServerProcess, because: str) -> bool:
    """Ready but degraded, the replica out of rotation for a reason starting with ``because``."""
    ready = httpx.get(server.url + "/readyz")
    body = ready.json()
    state = body.get("replicas", {}).get("s0/replica1", "")
    out = state.startswith(f"out of rotation: {because}")
    return ready.status_code == 200 and body["status"] == "degraded" and out


def replica_reads(replicated: Replicated) -> int:
    return int(replicated.replica.sql(READ_COUNTERS[replicated.backend]).strip())


def test_start_and_stop_log_only_the_rotation_changes_that_happened(replicated: Replicated) -> None:
    """A replica's first good probe puts it in rotation once (info); nothing claims it came back."""
    config = replicated.cluster.config_path.with_name("quiet.yaml")
    server = serve(replicated.cluster, config, 60)
    try:
        eventually(lambda: replica_in_rotation(server), what="the replica to join rotation")
    finally:
        server.stop()
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    rotation = [(entry["level"], entry["msg"]) for entry in entries if "rotation" in entry["msg"]]
    assert rotation == [("info", "replica in rotation")], rotation


def test_reads_are_served_by_the_replica(replicated: Replicated) -> None:
    server = replicated.lenient
    eventually(lambda: replica_in_rotation(server), what="the replica to join rotation")
    key = f"k-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url) as client:
        assert client.put(f"/v1/kv/{key}", content=b"replicated").status_code == 201
        eventually(lambda: client.get(f"/v1/kv/{key}").status_code == 200, what="replication")
        time.sleep(1.2)  # PostgreSQL flushes a backend's statistics about once a second
        before = replica_reads(replicated)
        for _ in range(200):
            assert client.get(f"/v1/kv/{key}").content == b"replicated"
        # The replica's own counters see the reads. PostgreSQL publishes a busy backend's statistics
        # once it has been idle for a while (PGSTAT_IDLE_INTERVAL, 10 s), hence the long wait.
        eventually(lambda: replica_reads(replicated) - before >= 200, timeout_s=15, what="the replica's counters")
        metrics = client.get("/metrics").text
    assert 'kvstore_reads_total{shard="s0",target="replica"}' in metrics


def test_read_after_and_strong_are_never_stale_while_plain_reads_may_be(replicated: Replicated) -> None:
    inject, remove = DELAY[replicated.backend]
    key = f"k-{uuid.uuid4().hex}"
    with httpx.Client(base_url=replicated.lenient.url) as client:
        client.put(f"/v1/kv/{key}", content=b"old")
        eventually(lambda: client.get(f"/v1/kv/{key}").content == b"old", what="replication")
        for statement in inject:
            replicated.replica.sql(statement)
        try:
            eventually(lambda: replica_in_rotation(replicated.lenient), what="the replica back in rotation")
            written = client.put(f"/v1/kv/{key}", content=b"new")
            token = written.headers["kv-read-after"]
            plain = client.get(f"/v1/kv/{key}")
            assert plain.content in (b"old", b"new")
            assert plain.content == b"old", "the delayed replica answers plain reads (stale within its lag bound)"
            assert client.get(f"/v1/kv/{key}", params={"after": token}).content == b"new"
            assert client.get(f"/v1/kv/{key}", headers={"Kv-Read-After": token}).content == b"new"
            assert client.get(f"/v1/kv/{key}", params={"consistency": "strong"}).content == b"new"
            assert client.get(f"/v1/kv/{key}", headers={"Consistency": "strong"}).content == b"new"
            # The strict front end measures the delay and takes the replica out of rotation *for its lag*:
            # out only because replication was restarted (MariaDB, to set the delay), it may rightly let
            # the replica back in within its lag bound, still serving the old value. It says so
            # in one /readyz answer: read twice, the replica could already be back, having replayed
            # the one delayed write.
            eventually(lambda: degraded_without_replica(replicated.strict, "lag"), timeout_s=DELAY_S + 5, what="out")
            assert httpx.get(replicated.strict.url + f"/v1/kv/{key}").content == b"new"
        finally:
            for statement in remove:
                replicated.replica.sql(statement)
    eventually(lambda: replica_in_rotation(replicated.strict), timeout_s=DELAY_S + 10, what="back in rotation")


def replica_behind_fallbacks(server: ServerProcess) -> float:
    """GETs the server sent to the primary because the replica had not replayed their token yet."""
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "kvstore_read_fallbacks_total" and sample.labels["reason"] == "replica_behind_read_after":
                return sample.value
    return 0.0


def test_a_client_session_reads_its_own_writes_from_a_delayed_replica(replicated: Replicated) -> None:
    """kvstore.client's session sends its token with every read: the server asks the replica, finds
    it behind, and answers from the primary; a token of another shard beside it changes nothing."""
    inject, remove = DELAY[replicated.backend]
    server, key = replicated.lenient, f"k-{uuid.uuid4().hex}"
    with Client(server.url) as kv:
        kv.put(key, b"old")
        eventually(lambda: httpx.get(f"{server.url}/v1/kv/{key}").content == b"old", what="replication")
        for statement in inject:
            replicated.replica.sql(statement)
        try:
            eventually(lambda: replica_in_rotation(server), what="the replica back in rotation")
            session = kv.session()
            session.put(key, b"new")
            assert kv.get(key).value == b"old", "a read outside the session: the delayed replica"
            before = replica_behind_fallbacks(server)
            assert session.get(key).value == b"new"
            assert replica_behind_fallbacks(server) == before + 1, "the replica was asked first, by the token"
            tokens = session._operations.tokens
            assert tokens is not None
            both = f"{encode_read_after('s9', '0/0')},{tokens.header()}"
            assert httpx.get(f"{server.url}/v1/kv/{key}", headers={"Kv-Read-After": both}).content == b"new"
            assert replica_behind_fallbacks(server) == before + 2
            assert [(item.key, item.value) for item in session.list(key, values=True)] == [(key, b"new")]
        finally:
            for statement in remove:
                replicated.replica.sql(statement)


def test_expired_and_deleted_keys_are_404_on_replicas(replicated: Replicated) -> None:
    key, gone = f"k-{uuid.uuid4().hex}", f"k-{uuid.uuid4().hex}"
    with httpx.Client(base_url=replicated.lenient.url) as client:
        eventually(lambda: replica_in_rotation(replicated.lenient), what="rotation")
        status = client.get("/v1/status").json()  # the console's view: the replica as the probe saw it
        (s0,) = [shard for shard in status["shards"] if shard["name"] == "s0"]
        (replica,) = s0["replicas"]
        assert (replica["node"], replica["reachable"], replica["in_rotation"]) == ("s0/replica1", True, True)
        assert 0 <= replica["lag_s"] <= 5 and replica["problem"] is None
        token = client.put(f"/v1/kv/{key}?ttl=1", content=b"brief").headers["kv-read-after"]
        assert client.get(f"/v1/kv/{key}", params={"after": token}).content == b"brief"
        client.put(f"/v1/kv/{gone}", content=b"doomed")
        deleted = client.delete(f"/v1/kv/{gone}")
        assert client.get(f"/v1/kv/{gone}", params={"after": deleted.headers["kv-read-after"]}).status_code == 404
        eventually(lambda: client.get(f"/v1/kv/{gone}").status_code == 404, what="the delete to replicate")
        time.sleep(1.2)
        assert client.get(f"/v1/kv/{key}").status_code == 404, "expiry is filtered on the replica too"


async def test_a_stopped_replica_costs_no_client_error(replicated: Replicated) -> None:
    server = replicated.lenient
    eventually(lambda: replica_in_rotation(server), what="rotation")
    key = f"k-{uuid.uuid4().hex}"
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await client.put(f"/v1/kv/{key}", content=b"v", params={})
        await asyncio.sleep(0.5)
        stop = time.monotonic() + 4

        async def reader() -> None:
            while time.monotonic() < stop:
                statuses.append((await client.get(f"/v1/kv/{key}")).status_code)

        async def fault() -> None:
            await asyncio.sleep(1)
            await asyncio.to_thread(replicated.replica.stop)

        await asyncio.gather(*(reader() for _ in range(4)), fault())
    assert len(statuses) > 100
    errors = [line for line in server.log_path.read_text().splitlines() if "unhandled" in line][:1]
    assert set(statuses) == {200}, f"reads fell back to the primary without a client error: {errors}"
    assert not replica_in_rotation(server)
    await asyncio.to_thread(replicated.replica.start)
    eventually(lambda: replica_in_rotation(server), timeout_s=20, what="the restarted replica to rejoin")
