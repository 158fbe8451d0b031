"""Natural batching, A/B in one run: kvstore with batching off, on, and on with 2 workers, beside
the raw-driver ceiling, on the same cluster, keys and sequences.

``python -m benchmarks.batching --backend postgres`` runs it alone (a few minutes); ``make bench``
runs the same section per backend (``variants``) and puts it in the report.

Each variant serves the 99:1 read mix and the write-only mix at 64 connections, and the 99:1 mix
at 1 connection (where batching must cost nothing: a request that finds the lane idle goes out
alone, at once). Legs run in ABBA order over the variants so drift falls on all of them alike.
"""

import asyncio
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from benchmarks import deployment, raw, wrk
from benchmarks.load import progress
from benchmarks.measurement import Measurement
from benchmarks.workloads import Workload, key_indexes, key_name, value_bytes, write_lines
from kvstore.config import Settings


@dataclass(frozen=True)
class Variant:
    name: str
    batching: bool
    workers: int


VARIANTS = (
    Variant("batching off", False, 1),
    Variant("batching on", True, 1),
    Variant("batching on, 2 workers", True, 2),
)


def workloads(value_size: int, connections: int) -> list[Workload]:
    read = Workload("read-99", "uniform", value_size, connections)
    return [read, replace(read, mix="write-only"), replace(read, connections=1)]


def variants(
    base: Path,
    work: Path,
    settings: Settings,
    keys: list[str],
    value_size: int,
    duration_s: float,
    connections: int,
    abba: bool = True,
) -> dict[str, Any]:
    """Every variant on every workload (ABBA over variants unless ``abba`` is off, as in the smoke
    run), and the raw ceiling once per workload."""
    value = value_bytes(value_size)
    keys_file = write_lines(work / "batching-keys.txt", keys)
    value_file = work / "batching-value"
    value_file.write_bytes(value)
    runs: dict[tuple[str, str], list[Measurement]] = {}
    for variant in (*VARIANTS, *reversed(VARIANTS)) if abba else VARIANTS:
        config = deployment.variant(
            base,
            work / f"batching-{variant.batching}-{variant.workers}.yaml",
            workers=variant.workers,
            sweeper=True,
            replicas=False,
            batching=variant.batching,
        )
        with deployment.serving(config) as server:
            assert server.process is not None
            for workload in workloads(value_size, connections):
                spec = wrk.LoadSpec("kv", server.url, keys_file, value_file, workload.read_fraction)
                measured = wrk.run(
                    spec, variant.name, workload.name, workload.connections, duration_s / 2, server.process.pid
                )
                runs.setdefault((variant.name, workload.name), []).append(measured)
                cpu = measured.cpu_us_per_request
                progress(f"  {variant.name}, {workload.name}: {measured.per_second:,.0f}/s, {cpu} us CPU/req")
    figures: dict[str, Any] = {"legs": "ABBA" if abba else "A", "variants": {}, "raw": {}}
    for workload in workloads(value_size, connections):
        ceiling = raw.run(settings, workload, keys, value, duration_s, int(100_000 * duration_s), use_replicas=False)
        figures["raw"][workload.name] = ceiling.to_json()
        progress(f"  raw, {workload.name}: {ceiling.per_second:,.0f}/s")
        for variant in VARIANTS:
            legs = runs[(variant.name, workload.name)]
            figures["variants"].setdefault(variant.name, {})[workload.name] = pooled(legs, ceiling)
    return figures


def pooled(legs: list[Measurement], ceiling: Measurement) -> dict[str, Any]:
    seconds = sum(leg.duration_s for leg in legs)
    per_second = sum(leg.requests for leg in legs) / seconds
    cpu = [leg.cpu_us_per_request for leg in legs if leg.cpu_us_per_request is not None]
    return {
        "per_second": round(per_second, 1),
        "x_raw": round(per_second / ceiling.per_second, 2) if ceiling.per_second else None,
        "p50_ms": round(sum(leg.p50_ms for leg in legs) / len(legs), 3),
        "p99_ms": round(sum(leg.p99_ms for leg in legs) / len(legs), 3),
        "cpu_us_per_request": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "errors": sum(leg.errors for leg in legs),
    }


def table(figures: dict[str, Any]) -> str:
    names = list(figures["raw"])
    lines = [
        "| variant | " + " | ".join(f"{name}: /s (x raw), p50, CPU µs/req" for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    raw_cells = [
        f"{figures['raw'][name]['per_second']:,.0f}, {figures['raw'][name]['p50_ms']:.2f} ms" for name in names
    ]
    lines.append("| raw driver | " + " | ".join(raw_cells) + " |")
    for variant, per_workload in figures["variants"].items():
        cells = [
            f"{row['per_second']:,.0f} ({row['x_raw']}x), {row['p50_ms']:.2f} ms, {row['cpu_us_per_request']}"
            for row in (per_workload[name] for name in names)
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--backend", type=click.Choice(["postgres", "mysql"]), default="postgres", show_default=True)
@click.option("--keys", type=click.IntRange(min=100), default=100_000, show_default=True)
@click.option("--value-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--duration", "duration_s", type=click.FloatRange(min=1), default=4, show_default=True)
@click.option("--connections", type=click.IntRange(min=1), default=64, show_default=True)
def main(backend: str, keys: int, value_size: int, duration_s: float, connections: int) -> None:
    """Batching off vs on vs 2 workers vs the raw driver, on one fresh durable cluster (1 shard)."""
    with tempfile.TemporaryDirectory(prefix=f"kvbatch-{backend}-") as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # PostgreSQL runs as its own OS user and must reach the cluster below
        with deployment.cluster(backend, work / "cluster", 1, 1, True) as base:
            settings = deployment.settings_of(base)
            names = [key_name(value_size, index) for index in range(keys)]
            asyncio.run(deployment.load(settings, deployment.persistent_rows(names, value_bytes(value_size))))
            sequence = [names[int(index)] for index in key_indexes("uniform", keys)]
            figures = variants(base, work, settings, sequence, value_size, duration_s, connections)
    click.echo(table(figures))


if __name__ == "__main__":
    main()
