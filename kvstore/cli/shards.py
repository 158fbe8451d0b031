"""``kvstore shards …``: schema and shard tooling."""

import asyncio
import json
import logging
from dataclasses import dataclass, field

import click

from kvstore.backends.base import TableStats
from kvstore.cli.fleet import reach_fleet
from kvstore.cli.options import config_option, settings_or_exit, table
from kvstore.config import Settings
from kvstore.errors import KvError
from kvstore.replicas import ReplicaHealth
from kvstore.router import Router
from kvstore.shard import Shard


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


SAMPLES = 5
SAMPLE_SIZE = 100


@dataclass(frozen=True)
class RowCounts:
    """A shard's rows, each count with how it was obtained: "exact", "estimate" or "sample"."""

    total: int | None
    with_expiry: int | None
    dead: int | None
    methods: dict[str, str]
    sampled: int
    sampled_dead: int

    @property
    def live(self) -> int | None:
        return None if self.total is None or self.dead is None else max(self.total - self.dead, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "live": self.live,
            "dead": self.dead,
            "with_expiry": self.with_expiry,
            "methods": self.methods,
            "sample": {"rows": self.sampled, "dead": self.sampled_dead},
        }


def count_rows(stats: TableStats, samples: list[list[tuple[str, bool]]], sample_size: int) -> RowCounts:
    """Counts from the table's statistics and random samples of the rows with an expiry.

    A sample that comes back short holds every row with an expiry, so then the dead rows are
    counted; otherwise the sampled dead fraction is scaled to the rows with an expiry.
    """
    seen = {key: dead for sample in samples for key, dead in sample}
    sampled, sampled_dead = len(seen), sum(seen.values())
    engine = "exact" if stats.exact else "estimate"
    with_expiry: int | None
    dead: int | None
    if any(len(sample) < sample_size for sample in samples):
        with_expiry, dead, methods = sampled, sampled_dead, {"with_expiry": "exact", "dead": "exact"}
    else:
        with_expiry, methods = stats.expiring, {"with_expiry": engine, "dead": "sample"}
        dead = None if with_expiry is None else round(with_expiry * sampled_dead / sampled)
    live = "exact" if stats.exact and methods["dead"] == "exact" else "estimate"
    return RowCounts(stats.rows, with_expiry, dead, {"total": engine, "live": live, **methods}, sampled, sampled_dead)


@dataclass
class ShardStatus:
    name: str
    backend: str
    weight: int
    share: float
    primary_error: str | None = None
    error: str | None = None  # the primary answered, but not with statistics (no schema, no answer in time)
    schema_version: int | None = None
    rows: RowCounts | None = None
    replicas: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.primary_error is None and self.error is None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "backend": self.backend,
            "weight": self.weight,
            "share": self.share,
            "ok": self.ok,
            "primary": {"reachable": self.primary_error is None, "error": self.primary_error},
            "replicas": self.replicas,
            "schema_version": self.schema_version,
            "rows": None if self.rows is None else self.rows.to_json(),
            "error": self.error,
        }


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
    statuses = asyncio.run(_status_all(settings))
    if as_json:
        document = {"ok": all(s.ok for s in statuses), "shards": [s.to_json() for s in statuses]}
        click.echo(json.dumps(document, indent=2))
    else:
        _print_status(statuses)
    failed = [s for s in statuses if not s.ok]
    for shard in failed:
        click.echo(f"{shard.name}: FAILED: {shard.primary_error or shard.error}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} shard(s) failed: {', '.join(s.name for s in failed)}")


async def _status_all(settings: Settings) -> list[ShardStatus]:
    async with reach_fleet(settings) as fleet:
        ring = fleet.record.ring()
        weights, shares = {node.name: node.weight for node in ring.nodes}, ring.shares()
        # The ring in force first (it may name shards the config lacks), then configured shards outside it.
        names = dict.fromkeys([*ring.names, *fleet.shards])
        return list(
            await asyncio.gather(
                *(
                    _shard_status(fleet.shards[name], weights.get(name, 0), shares.get(name, 0.0), settings)
                    for name in names
                )
            )
        )


async def _shard_status(shard: Shard, weight: int, share: float, settings: Settings) -> ShardStatus:
    result = ShardStatus(shard.name, shard.backend, weight, share)
    timeout_s = settings.server.connect_timeout_s + settings.server.request_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            await shard.open()
            await shard.primary.ping()
    except KvError as error:
        result.primary_error = str(error)
    except TimeoutError:
        result.primary_error = f"shard {shard.name}: primary: no answer within {timeout_s:g} s"
    else:
        try:
            async with asyncio.timeout(timeout_s):
                stats = await shard.primary.table_stats()
                samples = [await shard.primary.sample_expiring(SAMPLE_SIZE) for _ in range(SAMPLES)]
        except KvError as error:
            result.error = str(error)
        except TimeoutError:
            result.error = f"shard {shard.name}: primary: no answer within {timeout_s:g} s"
        else:
            result.schema_version = stats.schema_version
            result.rows = count_rows(stats, samples, SAMPLE_SIZE)
    if shard.replicas is not None:
        await shard.replicas.probe()  # needs the primary's position: without it nothing is probed
        probed = result.primary_error is None
        result.replicas = [_replica_json(health, probed) for health in shard.replicas.replicas]
    return result


def _replica_json(health: ReplicaHealth, probed: bool) -> dict[str, object]:
    problem = health.problem if probed else "not probed: the primary did not answer"
    reachable = health.opened and not (problem or "").startswith("probe failed") if probed else None
    return {
        "node": health.node.label,
        "reachable": reachable,
        "in_rotation": health.in_rotation,
        "lag_s": health.lag_s,
        "problem": problem,
    }


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
                str(r["node"]),
                "?" if r["reachable"] is None else "yes" if r["reachable"] else "NO",
                "yes" if r["in_rotation"] else "no",
                "-" if r["lag_s"] is None else f"{r['lag_s']:.3f} s",
                str(r["problem"] or ""),
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
