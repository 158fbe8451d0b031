"""``python -m benchmarks``: kvstore against its ceilings and peers, side by side, in one run.

Per backend (PostgreSQL, then MariaDB) on a real ``kvstore cluster up`` cluster:

1. preload ``--keys`` keys per value size; write the key sequences (uniform, Zipfian) every
   target replays;
2. for each workload, wrk against ``kvstore serve`` and the raw driver with the same concurrency,
   plus the HTTP floor (``/healthz`` on the same server) at every swept concurrency;
3. replica scaling (the same read-only and write-only loads with and without the shards' replicas);
4. the sweeper: foreground GETs with it stopped and while it reclaims preloaded dead rows;
5. sampling cost per batch at ``--keys`` and 10 x ``--keys`` rows (``benchmarks.sweeper_costs``);
6. natural batching A/B: the same server with batching off, on, and on with 2 workers
   (``benchmarks.batching``).

Peers run once per invocation on the same keys, values and sequences: etcd through its HTTP
gateway (wrk, the same Lua script) and Redis through ``redis-benchmark``. Every load run is bounded
by ``--duration`` (and the raw driver also by a request count). Results go to
``benchmarks/results/<date>-<backend>.{json,md,png}``.
"""

import asyncio
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from benchmarks import batching, deployment, peers, raw, report, wrk
from benchmarks.load import progress
from benchmarks.measurement import Measurement
from benchmarks.sweeper_costs.cost import sampling_cost
from benchmarks.target import open_target
from benchmarks.workloads import (
    MIXES,
    Workload,
    format_size,
    hottest_share,
    key_indexes,
    key_name,
    matrix,
    value_bytes,
    write_lines,
)
from kvstore.cluster import MariaDBInstance, PostgresInstance
from kvstore.cluster.instance import DatabaseInstance
from kvstore.config import Settings
from tests.support.server import ServerProcess

RESULTS = Path(__file__).parent / "results"
ENGINES = {"postgres": "PostgreSQL", "mysql": "MariaDB"}
INSTANCES: dict[str, Callable[..., Any]] = {"postgres": PostgresInstance.temporary, "mysql": MariaDBInstance.temporary}
DISTRIBUTIONS = ("uniform", "zipf")
RAW_MAX_OPS_PER_S = 100_000  # bound on the raw driver's request count, per second of --duration


@dataclass(frozen=True)
class Plan:
    """Everything one invocation measures; ``smoke`` shrinks it to seconds."""

    backends: tuple[str, ...]
    keys: int
    value_sizes: tuple[int, ...]
    mixes: tuple[str, ...]
    distributions: tuple[str, ...]
    connections: tuple[int, ...]
    main_connections: int
    workers: int
    duration_s: float
    shards: int
    replicas: int
    durable: bool
    sampling_rows: tuple[int, ...]
    peers: bool
    out: Path
    abba: bool = True  # A/B sections measured there and back again (off in the smoke run)

    def workloads(self) -> list[Workload]:
        """The matrix at ``main_connections``, then the concurrency sweep of the first workload."""
        main = matrix(list(self.mixes), list(self.distributions), list(self.value_sizes), self.main_connections)
        sweep = [replace(main[0], connections=c) for c in self.connections if c != self.main_connections]
        return main + sweep


@dataclass
class Files:
    """Key sequences and values on disk, as the wrk script reads them."""

    directory: Path
    sequences: dict[str, list[str]] = field(default_factory=dict)  # distribution -> key indexes

    def keys(self, workload: Workload) -> list[str]:
        return [key_name(workload.value_size, int(i)) for i in self.sequences[workload.distribution]]

    def kv_keys(self, workload: Workload) -> Path:
        path = self.directory / f"kv-{workload.distribution}-{workload.value_size}.txt"
        if not path.exists():
            write_lines(path, self.keys(workload))
        return path

    def etcd_keys(self, workload: Workload) -> Path:
        path = self.directory / f"etcd-{workload.distribution}-{workload.value_size}.txt"
        if not path.exists():
            write_lines(path, [peers.b64(key.encode()) for key in self.keys(workload)])
        return path

    def value(self, size: int, encoded: bool = False) -> Path:
        path = self.directory / f"value-{size}{'.b64' if encoded else ''}"
        if not path.exists():
            data = value_bytes(size)
            path.write_bytes(peers.b64(data).encode() if encoded else data)
        return path


def all_keys(plan: Plan, size: int) -> list[str]:
    return [key_name(size, index) for index in range(plan.keys)]


def run_kvstore_workloads(plan: Plan, files: Files, server: ServerProcess, settings: Settings) -> list[Measurement]:
    """Each workload through kvstore (wrk) and through the raw driver, back to back."""
    results = []
    for workload in plan.workloads():
        spec = wrk.LoadSpec(
            "kv", server.url, files.kv_keys(workload), files.value(workload.value_size), workload.read_fraction
        )
        kv = on_server(server, spec, workload, plan.duration_s)
        ceiling = raw.run(
            settings,
            workload,
            files.keys(workload),
            value_bytes(workload.value_size),
            plan.duration_s,
            int(RAW_MAX_OPS_PER_S * plan.duration_s),
        )
        progress(
            f"  {workload.name}: kvstore {kv.per_second:,.0f}/s ({kv.cpu_us_per_request} us CPU/req),"
            f" raw {ceiling.per_second:,.0f}/s ({ceiling.cpu_us_per_request} us CPU/req)"
        )
        results += [kv, ceiling]
    return results


def on_server(server: ServerProcess, spec: wrk.LoadSpec, workload: Workload, duration_s: float) -> Measurement:
    """wrk against kvstore, counting the server's CPU time per request."""
    assert server.process is not None
    return wrk.run(spec, "kvstore", workload.name, workload.connections, duration_s, server.process.pid)


def run_floor(plan: Plan, server: ServerProcess) -> list[Measurement]:
    """wrk against ``/healthz``: the HTTP stack alone, and proof wrk is not the bottleneck."""
    assert server.process is not None
    spec = wrk.LoadSpec("fixed", server.url + "/healthz")
    results = []
    for connections in plan.connections:
        workload = f"healthz c{connections}"
        results.append(wrk.run(spec, "http-floor", workload, connections, plan.duration_s, server.process.pid))
        progress(f"  http floor c{connections}: {results[-1].per_second:,.0f}/s")
    return results


def read_only(plan: Plan) -> Workload:
    return Workload("read-only", "uniform", plan.value_sizes[0], plan.main_connections)


def run_replica_scaling(plan: Plan, files: Files, base: Path, work: Path, settings: Settings) -> dict[str, Any]:
    """Read-only and write-only loads with the shards' replicas (reads go there, writes return a
    read-after token: one more round trip) and without them."""
    reads = read_only(plan)
    writes = replace(reads, mix="write-only")
    figures: dict[str, Any] = {"workloads": [reads.name, writes.name]}
    value = value_bytes(reads.value_size)
    for replicas in (plan.replicas, 0):
        config = deployment.variant(
            base, work / f"replicas-{replicas}.yaml", workers=plan.workers, sweeper=True, replicas=replicas > 0
        )
        figures[f"replicas_{replicas}"] = per_workload = {}
        for workload in (reads, writes):
            spec = wrk.LoadSpec(
                "kv", "", files.kv_keys(workload), files.value(workload.value_size), workload.read_fraction
            )
            with deployment.serving(config) as server:
                kv = on_server(server, replace(spec, url=server.url), workload, plan.duration_s)
            ceiling = raw.run(
                settings,
                workload,
                files.keys(workload),
                value,
                plan.duration_s,
                int(RAW_MAX_OPS_PER_S * plan.duration_s),
                use_replicas=replicas > 0,
            )
            per_workload[workload.mix] = {"kvstore": kv.to_json(), "raw": ceiling.to_json()}
            progress(
                f"  {workload.mix}, {replicas} replica(s) per shard: kvstore {kv.per_second:,.0f}/s,"
                f" raw {ceiling.per_second:,.0f}/s"
            )
    return figures


SWEEPER_LEGS = (False, True, True, False)
"""Sweeper stopped, running, running, stopped: drift over the section falls on both sides alike."""


def run_sweeper(plan: Plan, files: Files, base: Path, work: Path, settings: Settings) -> dict[str, Any]:
    """Foreground GETs with the sweeper stopped and while it reclaims ``--keys`` preloaded dead rows."""
    size = plan.value_sizes[0]
    dead_keys = [f"dead/{index:07d}" for index in range(plan.keys)]
    slots = iter(int(i) for i in key_indexes("uniform", 1 << 62, len(dead_keys)))
    asyncio.run(deployment.load(settings, deployment.expired_rows(dead_keys, value_bytes(size), slots)))
    workload = read_only(plan)
    spec = wrk.LoadSpec("kv", "", files.kv_keys(workload), files.value(size), 1.0)
    legs: dict[bool, list[tuple[Measurement, int]]] = {False: [], True: []}
    for sweeper in SWEEPER_LEGS:
        config = deployment.variant(
            base, work / f"sweeper-{sweeper}.yaml", workers=plan.workers, sweeper=sweeper, replicas=True
        )
        with deployment.serving(config) as server:
            before = asyncio.run(deployment.count(settings, "ttl <= ?"))
            kv = on_server(server, replace(spec, url=server.url), workload, plan.duration_s / 2)
            after = asyncio.run(deployment.count(settings, "ttl <= ?"))
        legs[sweeper].append((kv, before - after))
        state = "running" if sweeper else "stopped"
        progress(f"  sweeper {state}: {kv.per_second:,.0f} GET/s, p99 {kv.p99_ms:.2f} ms, reclaimed {before - after:,}")
    figures: dict[str, Any] = {"workload": workload.name, "dead_rows_loaded": len(dead_keys), "legs": "ABBA"}
    for sweeper, runs in legs.items():
        figures["running" if sweeper else "stopped"] = pooled(runs)
    return figures


def pooled(runs: list[tuple[Measurement, int]]) -> dict[str, Any]:
    """Legs of one state together: requests over time, the mean of their percentiles, rows reclaimed."""
    seconds = sum(m.duration_s for m, _ in runs)
    reclaimed = sum(rows for _, rows in runs)
    return {
        "per_second": round(sum(m.requests for m, _ in runs) / seconds, 1),
        "p50_ms": round(sum(m.p50_ms for m, _ in runs) / len(runs), 3),
        "p99_ms": round(sum(m.p99_ms for m, _ in runs) / len(runs), 3),
        "errors": sum(m.errors for m, _ in runs),
        "reclaimed_rows": reclaimed,
        "reclaim_per_s": round(reclaimed / seconds, 1),
        "legs": [m.to_json() for m, _ in runs],
    }


def run_sampling(plan: Plan, backend: str) -> list[dict[str, Any]]:
    """sample(20) and purge(20) cost per call at each table size, on a temporary server."""
    instance: DatabaseInstance
    with INSTANCES[backend](durable=False) as instance:

        async def measure() -> list[dict[str, Any]]:
            target = await open_target(backend, instance.dsn())
            try:
                points = await sampling_cost(target, plan.sampling_rows)
            finally:
                await target.node.close(5)
            return [
                {
                    "rows": p.rows,
                    "sample_mean_ms": p.sample.mean_ms,
                    "sample_p99_ms": p.sample.p99_ms,
                    "purge_mean_ms": p.purge.mean_ms,
                    "plan": p.plan,
                }
                for p in points
            ]

        return asyncio.run(measure())


def run_backend(plan: Plan, backend: str, files: Files, peer_results: list[Measurement]) -> Path:
    progress(f"{ENGINES[backend]}: cluster up ({plan.shards} shards x {plan.replicas} replica(s))")
    with tempfile.TemporaryDirectory(prefix=f"kvbench-{backend}-") as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # PostgreSQL runs as its own OS user and must reach the cluster below
        with deployment.cluster(backend, work / "cluster", plan.shards, plan.replicas, plan.durable) as base:
            settings = deployment.settings_of(base)
            for size in plan.value_sizes:
                progress(f"  preloading {plan.keys:,} keys of {format_size(size)}")
                rows = deployment.persistent_rows(all_keys(plan, size), value_bytes(size))
                asyncio.run(deployment.load(settings, rows))
            asyncio.run(deployment.wait_for_replicas(settings))
            config = deployment.variant(base, work / "main.yaml", workers=plan.workers, sweeper=True, replicas=True)
            with deployment.serving(config) as server:
                warm = plan.workloads()[0]
                wrk.run(
                    wrk.LoadSpec("kv", server.url, files.kv_keys(warm), files.value(warm.value_size), 1.0),
                    "warm-up",
                    warm.name,
                    warm.connections,
                    1,
                )
                floor = run_floor(plan, server)
                measured = run_kvstore_workloads(plan, files, server, settings)
            replicas = run_replica_scaling(plan, files, base, work, settings)
            sweeper = run_sweeper(plan, files, base, work, settings)
            progress("  batching off / on / on with 2 workers")
            size = plan.value_sizes[0]
            ab = batching.variants(
                base,
                work,
                settings,
                files.keys(read_only(plan)),
                size,
                plan.duration_s,
                plan.main_connections,
                plan.abba,
            )
        progress(f"  sampling cost at {', '.join(f'{rows:,}' for rows in plan.sampling_rows)} rows")
        sampling = run_sampling(plan, backend)
    document = report.document(
        backend=backend,
        engine=ENGINES[backend],
        plan=plan_json(plan),
        command=" ".join(["python -m benchmarks", *map(shlex.quote, sys.argv[1:])]),
        measurements=floor + measured + peer_results,
        replicas=replicas,
        sweeper=sweeper,
        batching=ab,
        sampling=sampling,
        skew={d: hottest_share(key_indexes(d, plan.keys)) for d in plan.distributions},
    )
    return report.write(document, plan.out)


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "keys": plan.keys,
        "value_sizes": list(plan.value_sizes),
        "mixes": {mix: MIXES[mix] for mix in plan.mixes},
        "distributions": list(plan.distributions),
        "connections": list(plan.connections),
        "main_connections": plan.main_connections,
        "workers": plan.workers,
        "duration_s": plan.duration_s,
        "shards": plan.shards,
        "replicas": plan.replicas,
        "durable": plan.durable,
        "sampling_rows": list(plan.sampling_rows),
    }


def run_peers(plan: Plan, files: Files) -> list[Measurement]:
    """etcd on the main-concurrency workloads (same keys, values, sequences), then redis-benchmark."""
    results: list[Measurement] = []
    main = [w for w in plan.workloads() if w.connections == plan.main_connections]
    with peers.etcd() as url:
        for size in plan.value_sizes:
            progress(f"etcd: preloading {plan.keys:,} keys of {format_size(size)}")
            peers.etcd_preload(url, all_keys(plan, size), value_bytes(size))
        for workload in main:
            spec = wrk.LoadSpec(
                "etcd", url, files.etcd_keys(workload), files.value(workload.value_size, True), workload.read_fraction
            )
            results.append(wrk.run(spec, "etcd", workload.name, workload.connections, plan.duration_s))
            progress(f"  etcd {workload.name}: {results[-1].per_second:,.0f}/s")
    with peers.redis() as port:
        for size in plan.value_sizes:
            requests = max(1000, int(50_000 * plan.duration_s))
            results += peers.redis_benchmark(port, plan.main_connections, requests, plan.keys, size)
            progress(
                f"  redis {format_size(size)}: "
                + ", ".join(f"{m.workload} {m.per_second:,.0f}/s" for m in results[-2:])
            )
    return results


def execute(plan: Plan) -> list[Path]:
    missing = peers.missing_binaries() if plan.peers else []
    if missing:
        raise click.ClickException("missing: " + ", ".join(missing) + " (make bench installs them as root)")
    written = []
    with tempfile.TemporaryDirectory(prefix="kvbench-files-") as scratch:
        files = Files(Path(scratch))
        files.sequences = {d: [str(i) for i in key_indexes(d, plan.keys)] for d in DISTRIBUTIONS}
        peer_results = run_peers(plan, files) if plan.peers else []
        for backend in plan.backends:
            written.append(run_backend(plan, backend, files, peer_results))
            progress(f"{ENGINES[backend]}: wrote {written[-1]}")
    return written


def integers(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(","))


@click.command()
@click.option("--backend", type=click.Choice(["postgres", "mysql", "both"]), default="both", show_default=True)
@click.option("--keys", type=click.IntRange(min=100), default=100_000, show_default=True, help="Keys per value size.")
@click.option("--value-size", "value_sizes", default="100,4096", show_default=True, help="Value sizes in bytes.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="kvstore serve workers.")
@click.option(
    "--duration", "duration_s", type=click.FloatRange(min=1), default=4, show_default=True, help="Seconds per load run."
)
@click.option("--connections", default="1,16,64,256", show_default=True, help="Concurrency sweep.")
@click.option("--shards", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--durable/--no-durable", default=True, show_default=True, help="fsync on commit (as etcd does).")
@click.option("--no-peers", is_flag=True, help="Skip etcd and Redis.")
@click.option("--smoke", is_flag=True, help="Tiny and quick: the test suite's check that the harness works.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=RESULTS, show_default=True)
def main(
    backend: str,
    keys: int,
    value_sizes: str,
    workers: int,
    duration_s: float,
    connections: str,
    shards: int,
    replicas: int,
    durable: bool,
    no_peers: bool,
    smoke: bool,
    out: Path,
) -> None:
    """Measure kvstore against the raw driver, the HTTP floor, etcd and Redis in one run."""
    plan = Plan(
        backends=("postgres", "mysql") if backend == "both" else (backend,),
        keys=keys,
        value_sizes=integers(value_sizes),
        mixes=("read-99", "read-50", "write-only"),
        distributions=DISTRIBUTIONS,
        connections=integers(connections),
        main_connections=64,
        workers=workers,
        duration_s=duration_s,
        shards=shards,
        replicas=replicas,
        durable=durable,
        sampling_rows=(keys, 10 * keys),
        peers=not no_peers,
        out=out,
    )
    if smoke:
        plan = replace(
            plan,
            keys=min(keys, 1000),
            value_sizes=plan.value_sizes[:1],
            mixes=("read-99", "write-only"),
            distributions=("zipf",),
            connections=(1, 16),
            main_connections=16,
            duration_s=1,
            shards=min(shards, 2),
            sampling_rows=(1000, 5000),
            abba=False,
        )
    plan.out.mkdir(parents=True, exist_ok=True)
    for path in execute(plan):
        click.echo(path)
