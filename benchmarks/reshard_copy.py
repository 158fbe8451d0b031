"""How fast online resharding moves rows, against a bare copy loop measured in the same run.

For each scenario the old shards are bulk-loaded with ``--rows`` rows (``--value-bytes`` each,
half with a one-hour expiry, half persistent), then:

- **bare loop** (the baseline): the same statements kvstore's copier runs (``scan_rows`` and
  ``import_rows`` on the shards' nodes, same batch size), in a plain loop with no routing work
  beyond the owner lookup and no cursor, into a second, empty set of target databases;
- **kvstore**: ``reshard start`` (timed: publishing the record, no pause), then ``copy`` (timed:
  rows scanned and moved per second, with the per-batch cursor compare-and-set), ``verify``,
  ``cutover`` and ``cleanup`` (each timed).

Scenarios: PostgreSQL 2 -> 3 shards, MariaDB 2 -> 3, MariaDB 2 -> PostgreSQL 2 (every key moves,
across engines) and SQLite 2 -> 3. Servers are temporary (``kvstore.cluster``), one per engine, a
database per shard; ``--no-durable`` turns fsync off on them.

    .venv/bin/python -m benchmarks.reshard_copy [--rows 100000] [--value-bytes 100] [--batch 500]
        [--scenarios pg,mysql,mysql-pg,sqlite] [--durable/--no-durable] [--json OUT]
"""

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import uvloop

from benchmarks.load import progress
from kvstore.backends.base import PERSISTENT_TTL, StoredRow
from kvstore.cluster import MariaDBInstance, PostgresInstance
from kvstore.cluster.instance import DatabaseInstance
from kvstore.config import Settings, parse_settings
from kvstore.reshard import migration
from kvstore.reshard.migration import CopyPace
from kvstore.reshard.verify import verify
from kvstore.router import Router
from kvstore.shard import Shard

SERVER = {"request_timeout_s": 1, "ring_poll_interval_s": 0.2}
SCENARIOS = {  # name: (old engine, old shard count, new engine, new shard count; same engine = shards added)
    "pg": ("postgres", 2, "postgres", 3),
    "mysql": ("mysql", 2, "mysql", 3),
    "mysql-pg": ("mysql", 2, "postgres", 2),
    "sqlite": ("sqlite", 2, "sqlite", 3),
}


class Databases:
    """Fresh, empty databases of each engine: files, or databases on one temporary server per engine."""

    def __init__(self, stack: ExitStack, durable: bool) -> None:
        self._stack, self._durable = stack, durable
        self._servers: dict[str, DatabaseInstance] = {}
        self._directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvstore-reshard-bench-")))

    def new(self, engine: str) -> str:
        if engine == "sqlite":
            return str(self._directory / f"{uuid.uuid4().hex[:8]}.db")
        if engine not in self._servers:
            kind = PostgresInstance if engine == "postgres" else MariaDBInstance
            self._servers[engine] = self._stack.enter_context(kind.temporary(durable=self._durable))
        name = f"b_{uuid.uuid4().hex[:12]}"
        self._servers[engine].sql(f"CREATE DATABASE {name}")
        return self._servers[engine].dsn(database=name)


def settings_for(specs: list[dict[str, Any]]) -> Settings:
    return parse_settings({"server": SERVER, "shards": specs}, {}, Path("/"))


def shard_specs(prefix: str, engine: str, count: int, databases: Databases, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}{start + index}", "backend": engine, "primary": databases.new(engine)}
        for index in range(count)
    ]


def target_specs(scenario: str, old: list[dict[str, Any]], databases: Databases) -> list[dict[str, Any]]:
    _, old_count, engine, count = SCENARIOS[scenario]
    if engine == old[0]["backend"]:
        return [*old, *shard_specs("s", engine, count - old_count, databases, start=old_count)]
    return shard_specs("t", engine, count, databases)


def rows_to_load(count: int, value_bytes: int) -> list[StoredRow]:
    expires = int(time.time() * 1000) + 3_600_000
    value = b"v" * value_bytes
    return [
        StoredRow(f"key-{index:08d}", value, expires if index % 2 else PERSISTENT_TTL, 1_000_000 + index, True)
        for index in range(count)
    ]


async def open_shards(settings: Settings) -> dict[str, Shard]:
    shards = {spec.name: Shard.from_settings(spec, settings.server) for spec in settings.shards}
    for shard in shards.values():
        await shard.open()
        await shard.primary.ensure_schema()
    return shards


async def load(settings: Settings, rows: list[StoredRow]) -> None:
    shards = await open_shards(settings)
    ring = settings.ring()
    try:
        for start in range(0, len(rows), 1000):
            batch: dict[str, list[StoredRow]] = {}
            for row in rows[start : start + 1000]:
                batch.setdefault(ring.owner(row.key), []).append(row)
            for name, mine in batch.items():
                await shards[name].primary.import_rows(mine, overwrite=False)
    finally:
        await asyncio.gather(*(shard.close(5) for shard in shards.values()))


async def bare_copy(old: Settings, new: Settings, batch: int) -> tuple[int, float]:
    """The copier's statements in a plain loop: (rows moved, seconds)."""
    sources, targets = await open_shards(old), await open_shards(new)
    ring, moved = new.ring(), 0
    started = time.perf_counter()
    try:
        for name, source in sources.items():
            after = ""
            while rows := await source.primary.scan_rows(after, batch):
                after = rows[-1].key
                grouped: dict[str, list[StoredRow]] = {}
                for row in rows:
                    owner = ring.owner(row.key)
                    if owner != name:
                        grouped.setdefault(owner, []).append(row)
                for owner, moving in grouped.items():
                    moved += await targets[owner].primary.import_rows(moving, overwrite=False)
        return moved, time.perf_counter() - started
    finally:
        await asyncio.gather(*(shard.close(5) for shard in [*sources.values(), *targets.values()]))


@dataclass
class Result:
    scenario: str
    rows: int
    moved: int
    bare_rows_per_s: float
    bare_moved_per_s: float
    copier_rows_per_s: float
    copier_moved_per_s: float
    ratio: float  # copier / bare, rows scanned per second
    start_s: float
    verify_s: float
    cleanup_s: float
    clean: bool


async def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await step()
    return result, time.perf_counter() - started


async def run_scenario(scenario: str, rows: list[StoredRow], batch: int, databases: Databases) -> Result:
    engine, count, _, _ = SCENARIOS[scenario]
    old_specs = shard_specs("s", engine, count, databases)
    old, new = settings_for(old_specs), settings_for(target_specs(scenario, old_specs, databases))
    baseline_new = settings_for(target_specs(scenario, shard_specs("s", engine, count, databases), databases))
    progress(f"{scenario}: loading {len(rows):,} rows")
    await load(old, rows)
    moved_bare, bare_s = await bare_copy(old, baseline_new, batch)

    router = Router(old)
    shards = router.shards
    for spec in new.shards:
        shards.setdefault(spec.name, Shard.from_settings(spec, old.server))
    try:
        for shard in shards.values():
            await shard.open()
            await shard.primary.ensure_schema()
        progress(f"{scenario}: reshard start")
        record, start_s = await timed(lambda: migration.start(shards, old, new, lambda _: None))
        _, copy_s = await timed(lambda: migration.copy(shards, record, CopyPace(batch), lambda *_: None))
        statuses = await migration.copy_status(shards, record)
        scanned, moved = sum(s.scanned for s in statuses), sum(s.copied for s in statuses)
        report, verify_s = await timed(lambda: verify(shards, record, batch))
        switched = await migration.cutover(shards, record, report.clean)
        _, cleanup_s = await timed(lambda: migration.cleanup(shards, switched, batch, lambda *_: None))
    finally:
        await router.close(5)
    progress(f"{scenario}: copier {scanned / copy_s:,.0f} rows/s, bare loop {len(rows) / bare_s:,.0f} rows/s")
    assert moved == moved_bare, f"copier moved {moved}, the bare loop {moved_bare}"
    return Result(
        scenario=scenario,
        rows=len(rows),
        moved=moved,
        bare_rows_per_s=len(rows) / bare_s,
        bare_moved_per_s=moved_bare / bare_s,
        copier_rows_per_s=scanned / copy_s,
        copier_moved_per_s=moved / copy_s,
        ratio=(scanned / copy_s) / (len(rows) / bare_s),
        start_s=start_s,
        verify_s=verify_s,
        cleanup_s=cleanup_s,
        clean=report.clean,
    )


def render(results: list[Result], settings: dict[str, Any]) -> str:
    header = (
        "| scenario | rows | moved | bare loop rows/s | copier rows/s | copier / bare | moved rows/s"
        " | start (s) | verify (s) | cleanup (s) | verify clean |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.scenario} | {r.rows:,} | {r.moved:,} | {r.bare_rows_per_s:,.0f} | {r.copier_rows_per_s:,.0f}"
        f" | {r.ratio:.2f} | {r.copier_moved_per_s:,.0f} | {r.start_s:.1f} | {r.verify_s:.1f}"
        f" | {r.cleanup_s:.1f} | {'yes' if r.clean else 'NO'} |"
        for r in results
    ]
    return (
        f"# Resharding copy rate\n\n`python -m benchmarks.reshard_copy` — settings: {json.dumps(settings)}\n\n"
        + header
        + "\n".join(lines)
        + "\n"
    )


@click.command()
@click.option("--rows", default=100_000, show_default=True, type=click.IntRange(min=100))
@click.option("--value-bytes", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--scenarios", default=",".join(SCENARIOS), show_default=True)
@click.option("--durable/--no-durable", default=True, show_default=True, help="fsync on every commit (servers).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(rows: int, value_bytes: int, batch: int, scenarios: str, durable: bool, json_path: Path | None) -> None:
    """Measure the reshard copier against a bare copy loop, per scenario."""
    chosen = [name for name in scenarios.split(",") if name]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise click.BadParameter(f"unknown scenario(s): {', '.join(sorted(unknown))}", param_hint="--scenarios")
    loaded = rows_to_load(rows, value_bytes)
    with ExitStack() as stack:
        databases = Databases(stack, durable)
        runner = stack.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        results = [runner.run(run_scenario(name, loaded, batch, databases)) for name in chosen]
    settings = {"rows": rows, "value_bytes": value_bytes, "batch": batch, "durable": durable, "server": SERVER}
    click.echo(render(results, settings))
    if json_path is not None:
        json_path.write_text(json.dumps({"settings": settings, "results": [asdict(r) for r in results]}, indent=2))


if __name__ == "__main__":
    main()
