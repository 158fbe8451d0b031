"""``kvstore shards …``: schema and shard tooling."""

import asyncio
import json
import logging

import click

from kvstore.cli.fleet import reach_fleet
from kvstore.cli.options import config_option, settings_or_exit, table
from kvstore.config import Settings
from kvstore.router import Router
from kvstore.status import SAMPLE_SIZE, SAMPLES, ClusterStatus, ShardStatus, cluster_status


@click.group()
def shards() -> None:
    """Inspect and prepare the configured shards."""


@shards.command("init")
@config_option
def init(config_file: str | None) -> None:
    """Create or upgrade the schema on every shard (idempotent).

    \b
    Example:
      kvstore shards init --config shards.yaml
    """
    settings = settings_or_exit(config_file)
    failures = asyncio.run(_init_all(settings))
    if failures:
        raise click.ClickException(f"{failures} shard(s) failed")


async def _init_all(settings: Settings) -> int:
    router = Router(settings)
    try:
        outcomes = await router.init_schemas()
    finally:
        await router.close(5.0)
    for name, error in outcomes.items():
        if error is None:
            click.echo(f"{name}: schema ok ({router.shards[name].backend})")
        else:
            click.echo(f"{name}: FAILED: {error}", err=True)
    return sum(error is not None for error in outcomes.values())


@shards.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
def status(config_file: str | None, as_json: bool) -> None:
    """Each shard: primary and replicas reachable, replica lag, ring share, schema version, rows.

    Row counts are exact on SQLite and on any table of up to 100,000 rows (a bounded count); on
    bigger PostgreSQL and MySQL tables they are the engine's estimates (pg_class.reltuples, none
    before the table is first analyzed; information_schema TABLE_ROWS), marked "~". Dead rows
    (expired or deleted) are counted from 5 random samples of 100 rows with an expiry, exactly
    when there are fewer such rows, else scaled. No data is changed. Exits 1 when a shard's
    primary cannot be reached or has no kvstore schema.

    \b
    Example:
      kvstore shards status --config shards.yaml
      kvstore shards status --config shards.yaml --json | jq '.shards[] | {name, ok, rows}'
    """
    settings = settings_or_exit(config_file)
    # The probe logs rotation changes as warnings; the table below already says it all.
    logging.getLogger("kvstore.replicas").setLevel(logging.ERROR)
    found = asyncio.run(_status_all(settings))
    if as_json:
        click.echo(json.dumps(found.to_json(), indent=2))
    else:
        _print_status(found.shards)
    failed = [s for s in found.shards if not s.ok]
    for shard in failed:
        click.echo(f"{shard.name}: FAILED: {shard.primary_error or shard.error}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} shard(s) failed: {', '.join(s.name for s in failed)}")


async def _status_all(settings: Settings) -> ClusterStatus:
    async with reach_fleet(settings) as fleet:
        timeout_s = settings.server.connect_timeout_s + settings.server.request_timeout_s
        return await cluster_status(fleet.shards, fleet.record, timeout_s, probe_replicas=True)


def _print_status(statuses: list[ShardStatus]) -> None:
    estimated = unknown = False

    def count(value: int | None, method: str) -> str:
        nonlocal estimated, unknown
        if value is None:
            unknown = True
            return "?"
        estimated |= method != "exact"
        return f"{'' if method == 'exact' else '~'}{value:,}"

    header = (
        "SHARD",
        "BACKEND",
        "WEIGHT",
        "SHARE",
        "PRIMARY",
        "SCHEMA",
        "ROWS",
        "LIVE",
        "DEAD",
        "WITH EXPIRY",
        "DEAD %",
    )
    rows = []
    for s in statuses:
        place = (s.name, s.backend, str(s.weight), f"{s.share * 100:.2f}%")
        if s.primary_error is not None:
            rows.append((*place, "DOWN", "-", "-", "-", "-", "-", "-"))
            continue
        schema = "-" if s.schema_version is None else str(s.schema_version)
        if s.rows is None:
            rows.append((*place, "up", "NONE" if s.error else schema, "-", "-", "-", "-", "-"))
            continue
        m = s.rows.methods
        counts = (
            count(s.rows.total, m["total"]),
            count(s.rows.live, m["live"]),
            count(s.rows.dead, m["dead"]),
            count(s.rows.with_expiry, m["with_expiry"]),
            "-" if not s.rows.sampled else f"{s.rows.sampled_dead / s.rows.sampled:.0%}",
        )
        rows.append((*place, "up", schema, *counts))
    click.echo(table(header, rows, right={2, 3, 5, 6, 7, 8, 9, 10}))
    replicas = [replica for s in statuses for replica in s.replicas]
    if replicas:
        click.echo("")
        replica_rows = [
            (
                r.node,
                "?" if r.reachable is None else "yes" if r.reachable else "NO",
                "yes" if r.in_rotation else "no",
                "-" if r.lag_s is None else f"{r.lag_s:.3f} s",
                r.problem or "",
            )
            for r in replicas
        ]
        click.echo(table(("REPLICA", "REACHABLE", "IN ROTATION", "LAG", "PROBLEM"), replica_rows, right={3}))
    if estimated or unknown:
        click.echo("")
    if estimated:
        click.echo(
            "~ estimate: ROWS (and WITH EXPIRY) from the engine's statistics; DEAD scaled from a random sample"
            f" of up to {SAMPLES} x {SAMPLE_SIZE} rows with an expiry (DEAD % of them); LIVE = ROWS - DEAD"
        )
    if unknown:
        click.echo(
            "? no figure: too many rows to count, and PostgreSQL has no estimate until the table is first analyzed;"
            " MySQL none for rows with an expiry"
        )
