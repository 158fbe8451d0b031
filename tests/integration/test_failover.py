"""Shard failover under an HA manager, under a steady write + read load through a real ``kvstore serve``.

One HA cluster per engine for the module (``kvstore cluster up --ha``, 1 shard of 3 members:
Patroni over etcd for PostgreSQL, Galera for MariaDB), used in order: the leader's machine dying
first (``kill -9`` of the server, and of Patroni with it), then, on the 2 members left, a planned
switchover (Patroni: ``patronictl switchover``; Galera: the writer node shut down cleanly, which
the last node survives as a cluster of one). Every other read carries its write's read-after
token, so no such answer may be older than the write; afterwards every acknowledged write reads
back. The figures (outage, errors, reads served meanwhile) are printed (``pytest -rP``)
and stated in README.
"""

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from kvstore.cluster import LocalCluster
from kvstore.cluster.ha import find_ha_binaries, ha_roles, leader
from kvstore.cluster.instance import DatabaseInstance
from kvstore.cluster.patroni import LOCAL_TIMING, PatroniMember, switchover
from kvstore.cluster.servers import SERVERS
from tests.conftest import require
from tests.support.server import ServerProcess
from tests.support.timeline import Timeline, assert_all_acknowledged_readable, run_timeline

REQUEST_TIMEOUT_S = 5.0
# Patroni's lock expires ttl after the leader's last renewal; a replica then takes it at its next
# loop and is promoted. Galera evicts a dead node after its suspect timeout. The bound both are
# held to (the target: 15 s).
FAILOVER_BOUND_S = LOCAL_TIMING.ttl + 2 * LOCAL_TIMING.loop_wait + 4.0


@dataclass
class HaShard:
    backend: str
    cluster: LocalCluster
    server: ServerProcess

    def leader(self) -> DatabaseInstance:
        return leader(self.cluster.layout, self.cluster.instances, "s0")

    def reads_by(self, target: str) -> float:
        text = httpx.get(f"{self.server.url}/metrics").text
        found = re.search(rf'kvstore_reads_total{{shard="s0",target="{target}"}} ([0-9.e+]+)', text)
        return float(found.group(1)) if found else 0.0

    def sync_standby(self, timeout_s: float = 15) -> str:
        """The member Patroni names synchronous standby (after a failover it names one within a loop or two)."""
        deadline = time.monotonic() + timeout_s
        while True:
            roles = ha_roles(self.cluster.layout, self.cluster.instances)
            found = [name for name, role in roles.items() if role.role == "sync_standby"]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no synchronous standby: {roles}"
            time.sleep(0.1)

    async def planned_switchover(self, old: DatabaseInstance) -> None:
        if isinstance(old, PatroniMember):
            candidate = await asyncio.to_thread(self.sync_standby)
            await asyncio.to_thread(switchover, old, old.name, candidate.split("/")[1])
        else:
            await asyncio.to_thread(old.stop)  # a clean shutdown: Galera hands its writes on at once


@pytest.fixture(scope="module", params=["postgres", "mysql"])
def ha_shard(request: pytest.FixtureRequest) -> Iterator[HaShard]:
    backend = str(request.param)
    require(SERVERS[backend].find_binaries)
    require(lambda: find_ha_binaries(backend))
    parent = Path(tempfile.mkdtemp(prefix="kvstore-ha-test-"))
    parent.chmod(0o711)  # the servers run as their own OS users and must reach the data dirs
    cluster = LocalCluster.create(backend, parent / "cluster", shards=1, durable=False, ha=True)
    server = None
    try:
        cluster.up(timeout_s=90)
        document = yaml.safe_load(cluster.config_path.read_text())
        document["server"] = {"request_timeout_s": REQUEST_TIMEOUT_S, "replica_probe_interval_s": 0.2}
        config = parent / "serve.yaml"
        config.write_text(yaml.safe_dump(document))
        server = ServerProcess(config).start()
        yield HaShard(backend, cluster, server)
    finally:
        if server is not None:
            server.stop()
        cluster.down()
        left = [
            name
            for name, instance in cluster.instances.items()
            if instance.pid() is not None or (isinstance(instance, PatroniMember) and instance.postgres.pid())
        ]
        shutil.rmtree(parent, ignore_errors=True)
        assert not left, f"kvstore cluster down left these running: {left}"


def test_cluster_status_shows_the_roles_the_ha_manager_gives(ha_shard: HaShard) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "cluster", "status", "--dir", str(ha_shard.cluster.layout.root), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    roles = sorted(i["ha"]["role"] for i in json.loads(result.stdout)["instances"] if i["shard"] == "s0")
    expected = (
        ["leader", "replica", "sync_standby"] if ha_shard.backend == "postgres" else ["synced", "synced", "writer"]
    )
    assert roles == expected, result.stdout
    table = subprocess.run(
        [sys.executable, "-m", "kvstore", "cluster", "status", "--dir", str(ha_shard.cluster.layout.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert all(role in table for role in expected), table


def wait_for_replicas_in_rotation(shard: HaShard, count: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        replicas = httpx.get(f"{shard.server.url}/readyz").json().get("replicas", {})
        if sum(state.startswith("up") for state in replicas.values()) >= count:
            return
        assert time.monotonic() < deadline, f"replicas in rotation: {replicas}"
        time.sleep(0.1)


def only_expected_errors(timeline: Timeline, server: ServerProcess) -> None:
    """Writes fail only as cut off in flight (503 "may have been applied") or finding no leader before
    their deadline (503 "cannot connect", nothing sent); a read fails only with a 503, when it needed
    the leader (its replica had not replayed its token yet), and rarely; nothing answers 500 (the
    server's log of it is in the failure message)."""
    expected = ("may have been applied", "no host took connections")
    errors = timeline.errors()
    writes = [a for a in errors if a.op == "put"]
    reads = [a for a in errors if a.op == "get"]
    unhandled = [line for line in server.log_path.read_text(errors="replace").splitlines() if "unhandled error" in line]
    assert all(any(e in a.detail for e in expected) for a in writes), ([a.detail for a in writes], unhandled)
    assert all(a.status == 503 for a in reads), ([(a.status, a.detail) for a in reads], unhandled)
    assert len(reads) <= max(2, len(timeline.ok("get")) // 100), [a.detail for a in reads]


async def test_leader_killed_fails_over_within_the_bound_losing_nothing(ha_shard: HaShard) -> None:
    wait_for_replicas_in_rotation(ha_shard, 1)
    dying = ha_shard.leader()
    replica_reads_before = ha_shard.reads_by("replica")

    async def machine_dies() -> None:
        await asyncio.to_thread(dying.kill)

    timeline = await run_timeline(ha_shard.server.url, machine_dies, fault_at_s=1.0, timeout_s=REQUEST_TIMEOUT_S)
    start, end = timeline.write_outage()
    served = timeline.reads_ok_between(start, end)
    print(
        f"{ha_shard.backend} leader {dying.data_dir.name} killed: {timeline.summary()};"
        f" {served} reads answered while writes were down"
    )
    assert end - start <= FAILOVER_BOUND_S
    assert ha_shard.leader().data_dir != dying.data_dir
    assert served > 0, "reads kept being served meanwhile"
    assert ha_shard.reads_by("replica") > replica_reads_before
    only_expected_errors(timeline, ha_shard.server)
    await assert_all_acknowledged_readable(ha_shard.server.url, timeline)


async def test_planned_switchover_costs_no_more_than_the_deadline(ha_shard: HaShard) -> None:
    wait_for_replicas_in_rotation(ha_shard, 1)
    old = ha_shard.leader()

    timeline = await run_timeline(
        ha_shard.server.url, lambda: ha_shard.planned_switchover(old), fault_at_s=1.0, timeout_s=REQUEST_TIMEOUT_S
    )
    print(f"{ha_shard.backend} switchover from {old.data_dir.name}: {timeline.summary()}")
    assert ha_shard.leader().data_dir != old.data_dir
    assert timeline.write_outage_s() <= REQUEST_TIMEOUT_S
    only_expected_errors(timeline, ha_shard.server)
    await assert_all_acknowledged_readable(ha_shard.server.url, timeline)
