"""``kvstore cluster …``: replicated local clusters of real PostgreSQL or MariaDB servers."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from kvstore.cluster import (
    ClusterError,
    InstanceError,
    LocalCluster,
    MemberStatus,
    MissingBinaries,
    ReplicationLag,
)
from kvstore.cluster.servers import SERVERS

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory holding the cluster: data, logs, cluster.json, shards.yaml.",
)


@click.group()
def cluster() -> None:
    """Run N shards x (1 primary + R replicas) on this machine, replicated by the databases themselves."""


@cluster.command("up")
@click.option("--backend", type=click.Choice(list(SERVERS)), required=True, help="Database to run.")
@click.option("--shards", type=click.IntRange(min=1), default=2, show_default=True, help="Number of shards.")
@click.option("--replicas", type=click.IntRange(min=0), default=1, show_default=True, help="Replicas per shard.")
@_dir_option
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="First of consecutive ports, in order s0/primary, s0/replica1, ... [default: free ports]",
)
@click.option(
    "--durable/--no-durable",
    default=True,
    show_default=True,
    help="Sync to disk on commit; --no-durable is faster, and a machine crash can corrupt the data.",
)
def up(backend: str, shards: int, replicas: int, directory: Path, base_port: int | None, durable: bool) -> None:
    """Start a cluster in a new or empty DIR and write DIR/shards.yaml for `kvstore serve`.

    Replicas follow their primary by PostgreSQL streaming replication or MariaDB GTID
    replication. On failure everything is stopped again; the logs stay in DIR.

    \b
    Example:
      kvstore cluster up --backend postgres --shards 2 --replicas 1 --dir ./cluster
      kvstore serve --config ./cluster/shards.yaml
    """
    with _one_line_errors():
        local = LocalCluster.create(
            backend, directory, shards=shards, replicas=replicas, base_port=base_port, durable=durable
        )
        click.echo(f"{backend} cluster in {local.layout.root}: {shards} shard(s) x (1 primary + {replicas} replica(s))")
        try:
            local.up(click.echo)
        except (ClusterError, InstanceError) as error:
            hint = f"(everything is stopped; to delete it: kvstore cluster down --dir {directory} --remove)"
            raise ClusterError(f"{error}\n{hint}") from None


@cluster.command("status")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
def status(directory: Path, as_json: bool) -> None:
    """Show each server: role, port, PID, and for replicas how far behind they are.

    Lag is WAL bytes and replay_lag seconds on PostgreSQL, transactions (from GTIDs)
    and Seconds_Behind_Master on MariaDB.

    \b
    Example:
      kvstore cluster status --dir ./cluster
      kvstore cluster status --dir ./cluster --json | jq '.instances[].replication'
    """
    with _one_line_errors():
        local = LocalCluster.load(directory)
        statuses = local.status()
    if as_json:
        document = {
            "backend": local.layout.backend,
            "dir": str(local.layout.root),
            "instances": [member.to_json() for member in statuses],
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(_table(statuses))
    for member in statuses:
        problem = member.problem or (member.replication and member.replication.last_error)
        if problem:
            click.echo(f"{member.member.name}: {problem}")


@cluster.command("down")
@_dir_option
@click.option("--remove", is_flag=True, help="Also delete DIR with all data and logs.")
def down(directory: Path, remove: bool) -> None:
    """Stop every server of the cluster in DIR, by PID, from any shell.

    \b
    Example:
      kvstore cluster down --dir ./cluster --remove
    """
    with _one_line_errors():
        local = LocalCluster.load(directory)
        if not any(instance.is_running() for instance in local.instances.values()):
            click.echo("no server was running")
        local.down(click.echo, remove=remove)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn the harness's errors into a ClickException: message on stderr, exit status 1."""
    try:
        yield
    except (ClusterError, InstanceError, MissingBinaries) as error:
        raise click.ClickException(str(error)) from None


def _table(statuses: list[MemberStatus]) -> str:
    header = ("INSTANCE", "ROLE", "PORT", "PID", "STATE", "BEHIND", "SECONDS", "POSITION (REPLICA / PRIMARY)")
    rows = [header, *(_row(member) for member in statuses)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _row(member: MemberStatus) -> tuple[str, ...]:
    place = (member.member.name, member.member.role, str(member.member.port))
    if member.pid is None:
        return (*place, "-", "stopped", "", "", "")
    lag = member.replication
    if lag is None:
        return (*place, str(member.pid), "running" if member.member.role == "primary" else "unknown", "", "", "")
    return (
        *place,
        str(member.pid),
        lag.state,
        _behind(lag),
        _seconds(lag),
        f"{lag.replica_position} / {lag.primary_position}",
    )


def _behind(lag: ReplicationLag) -> str:
    if lag.bytes_behind is not None:
        return f"{lag.bytes_behind} B"
    if lag.transactions_behind is not None:
        return f"{lag.transactions_behind} trx"
    return "-"


def _seconds(lag: ReplicationLag) -> str:
    return "-" if lag.seconds_behind is None else f"{lag.seconds_behind:.3f}"
