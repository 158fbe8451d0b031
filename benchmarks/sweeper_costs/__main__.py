"""``python -m benchmarks.sweeper_costs``: the four sections on each engine, then the markdown report."""

import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import click
import uvloop

from benchmarks.load import progress
from benchmarks.sweeper_costs.bias import BIAS_CALLS, BIAS_ROWS, sampling_bias
from benchmarks.sweeper_costs.cost import PURGE_CALLS, SAMPLE_CALLS, WARMUP_CALLS, sampling_cost
from benchmarks.sweeper_costs.index_cost import PUT_LIMIT_S, PUT_OPS, index_cost
from benchmarks.sweeper_costs.reclaim import GET_SECONDS, reclaim
from benchmarks.sweeper_costs.report import BackendReport, render
from benchmarks.sweeper_costs.rows import CONCURRENCY, VALUE, K
from benchmarks.sweeper_costs.slot_index import reset
from benchmarks.target import CACHE_SIZE, ENGINE_NAMES, SERVER_VERSION, execute, open_target
from kvstore.backends import mysql as mysql_backend
from kvstore.backends import postgres as postgres_backend
from kvstore.backends import sqlite as sqlite_backend
from kvstore.backends.sql import PURGE
from kvstore.cluster import MariaDBInstance, PostgresInstance
from kvstore.config import SweeperSettings

BACKENDS = ("sqlite", "postgres", "mysql")


async def run_backend(backend: str, location: str, rows: int) -> BackendReport:
    target = await open_target(backend, location)
    try:
        [(version,)] = await execute(target, SERVER_VERSION[backend])
        [(cache,)] = await execute(target, CACHE_SIZE[backend])
        report = BackendReport(target.name, str(version), str(cache))
        report.sizes = await sampling_cost(target, (rows // 10, rows))
        report.index_cost = await index_cost(target, rows)  # on the table section 1 left
        report.bias = await sampling_bias(target)
        report.reclaim = await reclaim(target)
        await reset(target)
        return report
    finally:
        await target.node.close(5.0)


async def run(locations: dict[str, str], rows: int) -> list[BackendReport]:
    reports = []
    for backend, location in locations.items():
        progress(f"{ENGINE_NAMES[backend]}: start")
        reports.append(await run_backend(backend, location, rows))
    return reports


def parse_backends(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise click.BadParameter(f"expected a comma-separated subset of {','.join(BACKENDS)}")
    return chosen


@click.command()
@click.option("--rows", default=1_000_000, show_default=True, type=click.IntRange(min=1000), help="Large table size.")
@click.option("--backends", default=",".join(BACKENDS), show_default=True, help="Comma-separated engines to run.")
@click.option("--durable/--no-durable", default=True, show_default=True, help="fsync on every commit (servers).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write all figures here.")
def main(rows: int, backends: str, durable: bool, json_path: Path | None) -> None:
    """Measure what the expiry sweeper costs: sampling, bias, index upkeep, reclaim rate."""
    chosen = parse_backends(backends)
    began = time.perf_counter()
    load_average = os.getloadavg()
    with ExitStack() as stack:
        locations: dict[str, str] = {}
        for backend in chosen:
            if backend == "sqlite":
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="kvstore-sweeper-bench-"))
                locations[backend] = str(Path(directory) / "bench.db")
            elif backend == "postgres":
                locations[backend] = stack.enter_context(PostgresInstance.temporary(durable=durable)).dsn()
            else:
                locations[backend] = stack.enter_context(MariaDBInstance.temporary(durable=durable)).dsn()
        runner = stack.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        reports = runner.run(run(locations, rows))
    settings = {
        "durable": durable,
        "rows": rows,
        "backends": chosen,
        "keys_per_sample": K,
        "value_bytes": len(VALUE),
        "sample_calls": SAMPLE_CALLS,
        "purge_calls": PURGE_CALLS,
        "warmup_calls": WARMUP_CALLS,
        "bias_rows": BIAS_ROWS,
        "bias_calls": BIAS_CALLS,
        "concurrency": CONCURRENCY,
        "put_ops": PUT_OPS,
        "put_limit_s": PUT_LIMIT_S,
        "get_seconds": GET_SECONDS,
        "sweeper": asdict(SweeperSettings()),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average,
        "load_average_at_end": os.getloadavg(),
        "wall_time_s": round(time.perf_counter() - began, 1),
        "kvstore_statements": {
            name: {"sample": module.STATEMENTS.sample, "purge": module.DIALECT.render(PURGE, keys=", ".join("?" * K))}
            for name, module in (("sqlite", sqlite_backend), ("postgres", postgres_backend), ("mysql", mysql_backend))
            if name in chosen
        },
    }
    progress(f"done in {settings['wall_time_s']:.0f} s")
    click.echo(render(reports, settings))
    if json_path is not None:
        figures = {"settings": settings, "backends": [asdict(report) for report in reports]}
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
