"""Replica selection for GET/HEAD on real PostgreSQL streaming replicas: round-robin or least-outstanding?

One shard, a primary and two standbys (``LocalCluster``, not durable); 10,000 keys of 100 bytes are
written through the primary node and the standbys waited for until they have replayed them. Then, for
each replica layout,

- equal: both standbys reached directly,
- slow: the second standby reached through a TCP proxy in this process (127.0.0.1, free port)
  that holds every chunk the server sends for 2 ms before passing it on, as a replica on a busier
  host or a farther link would answer, and
- slow, both proxied: the same, with the first standby behind a proxy too that delays nothing. The
  proxy shares the event loop (and the CPU) with the load generator, so in "slow" a strategy that
  sends fewer reads through it also spends less CPU on proxying; here both replicas cost the same
  CPU per read and only the 2 ms differ.

each ``server.replica_selection`` gets a shard built in-process the way the server builds it
(``Router(settings)``, ``shard.open()``, probes until both standbys are in rotation), and C tasks
call ``shard.read(key, strong=False, after_position=None)`` on random keys. Reported: reads/s,
p50/p99 of one read, the share of reads each node served (counted by wrapping the nodes' ``get``),
and, for scale, the idle latency of one read on each standby.

Each strategy runs ``--seconds`` in slices of about 1 s, alternating round_robin, least_outstanding,
least_outstanding, round_robin, ... so that load from other work on a shared machine falls on both
alike (it moved one strategy's figure by 2x between halves of a 20 s run); each shard first warms
its pools for 1 s. Besides the ratio of totals the table gives the median, over rounds, of each
slice's reads/s against round_robin's slice of the same round; per-slice reads/s are in the JSON.
The whole run stays under 3 minutes (about 80 s at the defaults on 2 cores); the cluster is
removed at the end.

Run from the repository root::

    .venv/bin/python -m benchmarks.replica_selection [--seconds 10] [--concurrency 32] [--json OUT]
"""

import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import click
import uvloop

from benchmarks.load import percentile_ms
from kvstore.backends import Node
from kvstore.backends.base import Row
from kvstore.cluster import InstanceError, LocalCluster
from kvstore.config import ServerSettings, Settings
from kvstore.replicas import SELECTIONS
from kvstore.router import Router
from kvstore.shard import Shard

KEYS = 10_000
VALUE = os.urandom(100)
DELAY_S = 0.002
WARM_UP_S = 1.0
IDLE_READS = 200
RUN_BUDGET_S = 170.0  # everything but the final teardown
JOIN_TIMEOUT_S = 15.0
CLUSTER_ATTEMPTS = 3
CLOSE_TIMEOUT_S = 5.0
BASELINE = "round_robin"
SLICE_S = 1.0
LAYOUTS = {
    "equal": "both direct",
    "slow": f"replica2 +{DELAY_S * 1000:g} ms (proxy), replica1 direct",
    "slow, both proxied": f"replica2 +{DELAY_S * 1000:g} ms (proxy), replica1 +0 ms (proxy)",
}


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk from the server ``delay_s`` before forwarding it.

    Chunks keep their order and each is delayed from when it arrived (a link with that one-way
    latency), not one after another; the client's bytes go through at once.
    """

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        server_writer: asyncio.StreamWriter | None = None
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            async with asyncio.TaskGroup() as group:
                group.create_task(_forward(client_reader, server_writer))
                group.create_task(self._forward_delayed(server_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away: close both
        finally:
            for writer in (client_writer, server_writer):
                if writer is not None:
                    writer.close()
            self._connections.discard(task)

    async def _forward_delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay_s, chunk))
            queue.put_nowait((loop.time() + self.delay_s, b""))

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(due - loop.time())
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        async with asyncio.TaskGroup() as group:
            group.create_task(receive())
            group.create_task(send())


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.close()


def count_reads(node: Node, served: Counter[str]) -> None:
    """Count in ``served[node.role]`` every ``get`` the node is asked for."""
    read = node.get

    async def get(key: str) -> Row | None:
        served[node.role] += 1
        return await read(key)

    node.get = get  # type: ignore[method-assign]


def with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit(":", 1)[0]
    return parts._replace(netloc=f"{host}:{port}").geturl()


@dataclass
class Measurement:
    layout: str
    selection: str
    reads: int = 0
    misses: int = 0
    elapsed_s: float = 0.0
    served: dict[str, int] = field(default_factory=dict)
    slices_per_s: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def per_second(self) -> float:
        return self.reads / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, fraction: float) -> float:
        """Nearest-rank percentile of one read's latency (NaN when there were none)."""
        return percentile_ms(sorted(self.latencies_s), fraction)

    def share(self, role: str) -> float:
        return self.served.get(role, 0) / max(1, sum(self.served.values()))

    def to_json(self) -> dict[str, object]:
        figures = asdict(self)
        del figures["latencies_s"]
        return figures | {
            "reads_per_s": round(self.per_second, 1),
            "p50_ms": round(self.percentile_ms(0.50), 3),
            "p99_ms": round(self.percentile_ms(0.99), 3),
        }


@asynccontextmanager
async def open_shard(settings: Settings, served: Counter[str]) -> AsyncIterator[Shard]:
    """Shard s0 as the server builds it, its nodes' reads counted, once both replicas are in rotation."""
    router = Router(settings)
    shard = router.shards["s0"]
    assert shard.replicas is not None
    for node in shard.nodes:
        count_reads(node, served)
    try:
        await shard.open()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not all(health.in_rotation for health in shard.replicas.replicas):
            if time.monotonic() > deadline:
                states = ", ".join(f"{h.node.label}: {h.describe()}" for h in shard.replicas.replicas)
                raise RuntimeError(f"replicas not in rotation after {JOIN_TIMEOUT_S:g} s: {states}")
            await shard.replicas.probe()
            await asyncio.sleep(0.05)
        yield shard
    finally:
        await router.close(CLOSE_TIMEOUT_S)


async def drive(shard: Shard, keys: list[str], seconds: float, concurrency: int, seed: int) -> Measurement:
    """``concurrency`` tasks reading random keys for ``seconds``; counts only, layout and selection unset."""
    measurement = Measurement("", "")
    latencies = measurement.latencies_s
    deadline = time.perf_counter() + seconds

    async def reader(rng: random.Random) -> None:
        while (started := time.perf_counter()) < deadline:
            row = await shard.read(rng.choice(keys), strong=False, after_position=None)
            latencies.append(time.perf_counter() - started)
            measurement.misses += row is None

    began = time.perf_counter()
    await asyncio.gather(*(reader(random.Random(seed * 1000 + index)) for index in range(concurrency)))
    measurement.elapsed_s = time.perf_counter() - began
    measurement.reads = len(latencies)
    return measurement


async def idle_latency_ms(node: Node, keys: list[str]) -> float:
    """Median of one read at a time on ``node``: what the proxy adds, without queueing."""
    samples = []
    for key in random.Random(1).sample(keys, IDLE_READS):
        started = time.perf_counter()
        await node.get(key)
        samples.append(time.perf_counter() - started)
    return round(1000 * statistics.median(samples), 3)


async def preload(settings: Settings, cluster: LocalCluster, keys: list[str]) -> None:
    router = Router(settings)
    try:
        primary = router.shards["s0"].primary
        await primary.open()
        pending = iter(keys)

        async def writer() -> None:
            for key in pending:
                await primary.put(key, VALUE, None)

        await asyncio.gather(*(writer() for _ in range(16)))
    finally:
        await router.close(CLOSE_TIMEOUT_S)
    for name in cluster.replicas:
        await asyncio.to_thread(cluster.replica(name).wait_caught_up, 30)


def alternating(names: list[str], rounds: int) -> list[str]:
    """``names`` forwards then backwards (A B B A A B ...): each gets ``rounds`` turns, none always first."""
    return [name for turn in range(rounds) for name in (names if turn % 2 == 0 else names[::-1])]


async def measure_layout(
    layout: str, settings: Settings, keys: list[str], seconds: float, concurrency: int
) -> tuple[list[Measurement], dict[str, float]]:
    totals = {selection: Measurement(layout, selection) for selection in SELECTIONS}
    served = {selection: Counter[str]() for selection in SELECTIONS}
    async with AsyncExitStack() as stack:
        shards = {}
        for selection in SELECTIONS:
            server = replace(settings.server, replica_selection=selection)
            shard = await stack.enter_async_context(open_shard(replace(settings, server=server), served[selection]))
            await drive(shard, keys, WARM_UP_S, concurrency, seed=0)
            shards[selection] = shard
        nodes = shards[BASELINE].nodes[1:]
        idle = {node.role: await idle_latency_ms(node, keys) for node in nodes}
        for counter in served.values():
            counter.clear()
        slices = max(1, round(seconds / SLICE_S))
        for turn, selection in enumerate(alternating(list(SELECTIONS), slices)):
            part = await drive(shards[selection], keys, seconds / slices, concurrency, seed=turn + 1)
            total = totals[selection]
            total.reads += part.reads
            total.misses += part.misses
            total.elapsed_s += part.elapsed_s
            total.latencies_s += part.latencies_s
            total.slices_per_s.append(round(part.per_second))
    for selection, total in totals.items():
        total.served = dict(sorted(served[selection].items()))
        click.echo(f"{layout} {selection}: {total.per_second:,.0f} reads/s, slices {total.slices_per_s}", err=True)
    return list(totals.values()), idle


def start_cluster(root: Path) -> LocalCluster:
    """1 primary + 2 standbys, with one more try when cloning a standby fails.

    Two ``pg_basebackup --checkpoint=fast`` runs at once sometimes fail with "requested WAL
    segment ... has already been removed" (the other clone's checkpoint recycled it before the
    slot held it); ``up()`` has then stopped everything, and a second try starts afresh.
    """
    for attempt in range(1, CLUSTER_ATTEMPTS + 1):
        cluster = LocalCluster.create("postgres", root, shards=1, replicas=2, durable=False)
        try:
            cluster.up(progress=lambda line: click.echo(line, err=True), timeout_s=60)
            return cluster
        except InstanceError as error:
            cluster.down(remove=True)
            cause = [line for line in str(error).splitlines() if "has already been removed" in line]
            if attempt == CLUSTER_ATTEMPTS or not cause:
                raise
            click.echo(f"cluster start failed, trying again: {cause[0]}", err=True)
    raise AssertionError("unreachable")


Idle = dict[str, dict[str, float]]
"""Layout -> replica role -> median latency of one read at a time, in ms."""


def with_replicas(settings: Settings, replicas: tuple[str, ...]) -> Settings:
    return replace(settings, shards=(replace(settings.shards[0], replicas=replicas),))


async def run(cluster: LocalCluster, seconds: float, concurrency: int) -> tuple[list[Measurement], Idle]:
    settings = cluster.settings()
    keys = [f"bench-{index:05d}" for index in range(KEYS)]
    await preload(settings, cluster, keys)
    direct1, direct2 = settings.shards[0].replicas
    proxies = [DelayProxy(_port(direct1), 0.0), DelayProxy(_port(direct2), DELAY_S)]
    try:
        proxied1, slow2 = [
            with_port(dsn, await proxy.start()) for dsn, proxy in zip((direct1, direct2), proxies, strict=True)
        ]
        layouts = {
            "equal": with_replicas(settings, (direct1, direct2)),
            "slow": with_replicas(settings, (direct1, slow2)),
            "slow, both proxied": with_replicas(settings, (proxied1, slow2)),
        }
        measurements: list[Measurement] = []
        idle: Idle = {}
        for layout, layout_settings in layouts.items():
            found, idle[layout] = await measure_layout(layout, layout_settings, keys, seconds, concurrency)
            measurements += found
    finally:
        for proxy in proxies:
            await proxy.close()
    return measurements, idle


def _port(dsn: str) -> int:
    port = urlsplit(dsn).port
    assert port is not None, "LocalCluster DSNs name their port"
    return port


def paired_ratio(measurement: Measurement, baseline: Measurement) -> float:
    """Median over rounds of reads/s against the baseline's slice of the same round: blind to load steps."""
    pairs = zip(measurement.slices_per_s, baseline.slices_per_s, strict=True)
    return statistics.median(ours / theirs for ours, theirs in pairs if theirs)


def baselines(measurements: list[Measurement]) -> dict[str, Measurement]:
    return {m.layout: m for m in measurements if m.selection == BASELINE}


def markdown_table(measurements: list[Measurement]) -> str:
    base_of = baselines(measurements)
    header = ["Replicas", "Selection", "Reads", "Reads/s", f"vs {BASELINE}", "same-round slices", "p50 ms", "p99 ms"]
    header += ["replica1 share", "replica2 share", "primary reads", "misses"]
    rows = [header, ["---"] * len(header)]
    for m in measurements:
        base = base_of[m.layout].per_second
        rows.append(
            [
                LAYOUTS[m.layout],
                m.selection,
                f"{m.reads:,}",
                f"{m.per_second:,.0f}",
                f"{m.per_second / base:.2f}x" if base else "-",
                f"{paired_ratio(m, base_of[m.layout]):.2f}x",
                f"{m.percentile_ms(0.50):.2f}",
                f"{m.percentile_ms(0.99):.2f}",
                f"{100 * m.share('replica1'):.1f} %",
                f"{100 * m.share('replica2'):.1f} %",
                str(m.served.get("primary", 0)),
                str(m.misses),
            ]
        )
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


@click.command()
@click.option("--seconds", default=10.0, show_default=True, type=click.FloatRange(1, 20), help="Per strategy.")
@click.option("--concurrency", default=32, show_default=True, type=click.IntRange(1, 256), help="Concurrent readers.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write all figures here.")
def main(seconds: float, concurrency: int, json_path: Path | None) -> None:
    """Benchmark round-robin against least-outstanding replica selection on a real PostgreSQL shard."""
    load_average = os.getloadavg()
    logging.getLogger("kvstore").setLevel(logging.ERROR)  # replicas joining rotation, as expected
    parent = Path(tempfile.mkdtemp(prefix="kvstore-replica-selection-"))
    parent.chmod(0o711)  # PostgreSQL runs as its own OS user and must reach the data dirs
    try:
        cluster = start_cluster(parent / "cluster")
        try:
            version = cluster.instances["s0/primary"].sql("SHOW server_version")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                measurements, idle = runner.run(asyncio.wait_for(run(cluster, seconds, concurrency), RUN_BUDGET_S))
        finally:
            cluster.down(remove=True)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    pool_size = ServerSettings().pool_max_size
    settings = {
        "pool_max_size": pool_size,
        "server": f"PostgreSQL {version}, streaming replication, not durable",
        "shape": "1 shard: primary + 2 standbys",
        "keys": KEYS,
        "value_bytes": len(VALUE),
        "seconds_per_strategy": seconds,
        "concurrency": concurrency,
        "slice_s": SLICE_S,
        "warm_up_s": WARM_UP_S,
        "slow_replica_delay_ms": DELAY_S * 1000,
        "idle_read_p50_ms": idle,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average,
    }
    idle_note = "; ".join(
        f"{LAYOUTS[layout]}: " + ", ".join(f"{role} {ms} ms" for role, ms in figures.items())
        for layout, figures in idle.items()
    )
    click.echo(
        f"{settings['server']}; {settings['shape']}; {KEYS:,} keys of {len(VALUE)} bytes; concurrency {concurrency};"
        f" {seconds:g} s per strategy (alternating slices of {SLICE_S:g} s); pool of {pool_size} per node.\n"
        f"Idle latency of one read (median of {IDLE_READS}): {idle_note}.\n\n" + markdown_table(measurements)
    )
    if json_path is not None:
        base_of = baselines(measurements)
        rows = [m.to_json() | {"same_round_ratio": round(paired_ratio(m, base_of[m.layout]), 3)} for m in measurements]
        figures = {"settings": settings, "measurements": rows}
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
