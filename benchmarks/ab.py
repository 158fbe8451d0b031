"""Before vs after, in one run: two checkouts of kvstore serving the same cluster in turn.

``python -m benchmarks.ab --before REV`` checks ``REV`` out into a temporary worktree and serves it
alternately with this working tree (``PYTHONPATH`` with ``PYTHONSAFEPATH`` decides which checkout's
``kvstore`` a server imports, and is checked), legs in ABBA order, on one fresh durable cluster per
backend (1 shard, no replica), with the raw driver measured in the same run. Each leg runs the 99:1
and write-only mixes at 64 connections and the 99:1 mix at 1 connection; the figures are throughput
(and its ratio to raw) and the server's CPU per request. Both sides get the same config, written in
the older side's terms (defaults only), and before each leg the shards are marked with the schema
version its side serves (versions only add objects: a side adds what it lacks).
"""

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import yaml

from benchmarks import deployment, raw, wrk
from benchmarks.batching import pooled, workloads
from benchmarks.load import progress
from benchmarks.measurement import Measurement
from benchmarks.workloads import key_indexes, key_name, value_bytes, write_lines
from kvstore.config import Settings
from tests.support import rawdb
from tests.support.server import ServerProcess

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Path]:
    """``revision`` in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="kvab-") as scratch:
        path = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def imported_from(env: dict[str, str]) -> Path:
    """Where ``kvstore`` comes from for a process started with ``env`` (as the server will be)."""
    code = "import kvstore; print(kvstore.__file__)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    return Path(done.stdout.strip()).resolve()


def served_schema(env: dict[str, str]) -> int:
    """The schema version the checkout a process started with ``env`` imports serves."""
    code = "from kvstore.backends.base import SCHEMA_VERSION; print(SCHEMA_VERSION)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    return int(done.stdout)


async def claim_schema(settings: Settings, version: int) -> None:
    """Mark the shards as holding schema ``version``, so that the side serving it starts on them:
    schema versions only add objects, and a side that finds an older version adds its own."""
    for shard in settings.shards:
        await rawdb.execute(
            shard.backend,
            shard.primary,
            "UPDATE kvstore_meta SET value = ? WHERE name = 'schema_version'",
            str(version),
        )


def plain_config(base: Path, path: Path) -> Path:
    """The cluster's shards with default server settings: valid for both checkouts."""
    document: dict[str, Any] = yaml.safe_load(base.read_text())
    document["server"] = {"request_timeout_s": 10}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def measure(backend: str, before: Path, keys: int, duration_s: float) -> dict[str, Any]:
    value = value_bytes(100)
    with tempfile.TemporaryDirectory(prefix=f"kvab-{backend}-") as scratch:
        work = Path(scratch)
        work.chmod(0o755)  # PostgreSQL runs as its own OS user and must reach the cluster below
        with deployment.cluster(backend, work / "cluster", 1, 0, True) as base:
            settings = deployment.settings_of(base)
            names = [key_name(100, index) for index in range(keys)]
            asyncio.run(deployment.load(settings, deployment.persistent_rows(names, value)))
            sequence = [names[int(index)] for index in key_indexes("uniform", keys)]
            keys_file = write_lines(work / "keys.txt", sequence)
            value_file = work / "value"
            value_file.write_bytes(value)
            config = plain_config(base, work / "ab.yaml")
            # `python -m` puts the working directory (this checkout) first on sys.path; PYTHONSAFEPATH
            # leaves it out, so PYTHONPATH decides which checkout's kvstore each side imports.
            sides = {"before": {"PYTHONPATH": str(before), "PYTHONSAFEPATH": "1"}, "after": {"PYTHONSAFEPATH": "1"}}
            for side, root in (("before", before), ("after", REPO)):
                assert imported_from(sides[side]).is_relative_to(root), f"{side}: the wrong checkout would serve"
            runs: dict[tuple[str, str], list[Measurement]] = {}
            schemas = {side: served_schema(env) for side, env in sides.items()}
            for side in ("before", "after", "after", "before"):
                asyncio.run(claim_schema(settings, schemas[side]))
                server = ServerProcess(config, env=sides[side]).start(timeout_s=60)
                try:
                    assert server.process is not None
                    for workload in workloads(100, 64):
                        spec = wrk.LoadSpec("kv", server.url, keys_file, value_file, workload.read_fraction)
                        leg = wrk.run(spec, side, workload.name, workload.connections, duration_s, server.process.pid)
                        runs.setdefault((side, workload.name), []).append(leg)
                        cpu = leg.cpu_us_per_request
                        progress(f"  {backend} {side}, {workload.name}: {leg.per_second:,.0f}/s, {cpu} us CPU")
                finally:
                    server.stop()
            figures: dict[str, Any] = {}
            for workload in workloads(100, 64):
                ceiling = raw.run(settings, workload, sequence, value, duration_s, int(100_000 * duration_s), False)
                figures[workload.name] = {"raw": ceiling.to_json()} | {
                    side: pooled(runs[(side, workload.name)], ceiling) for side in sides
                }
    return figures


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| backend | workload | before: /s (x raw), CPU us/req | after: /s (x raw), CPU us/req | after/before |",
        "|---|---|---|---|---|",
    ]
    for backend, by_workload in results.items():
        for name, row in by_workload.items():
            before, after = row["before"], row["after"]
            cells = [
                f"{side['per_second']:,.0f} ({side['x_raw']}x), {side['cpu_us_per_request']}"
                for side in (before, after)
            ]
            ratio = after["per_second"] / before["per_second"] if before["per_second"] else 0.0
            lines.append(f"| {backend} | {name} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    return "\n".join(lines)


@click.command()
@click.option("--before", "revision", required=True, help="The git revision to compare this working tree with.")
@click.option("--backend", type=click.Choice(["postgres", "mysql", "both"]), default="both", show_default=True)
@click.option("--keys", type=click.IntRange(min=100), default=50_000, show_default=True)
@click.option("--duration", "duration_s", type=click.FloatRange(min=1), default=3, show_default=True)
def main(revision: str, backend: str, keys: int, duration_s: float) -> None:
    """Serve REV and this working tree alternately on one cluster per backend; print the table."""
    backends = ("postgres", "mysql") if backend == "both" else (backend,)
    with checkout(revision) as before:
        results = {name: measure(name, before, keys, duration_s) for name in backends}
    click.echo(table(results))


if __name__ == "__main__":
    main()
