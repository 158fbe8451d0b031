"""``kvstore sweep``: reclaim expired and deleted rows now, in bounded batches."""

import asyncio
from dataclasses import replace

import click

from kvstore.cli.fleet import reach_fleet
from kvstore.cli.options import config_option, settings_or_exit
from kvstore.config import Settings
from kvstore.errors import KvError, ShardTimeout
from kvstore.ring_record import Phase
from kvstore.shard import Shard
from kvstore.sweeper import FullSweepProgress, acquire_within, full_sweep, sweep_cycle


@click.command()
@config_option
@click.option("--shard", "shard_names", multiple=True, help="Only this shard (repeatable; default: all).")
@click.option("--full", is_flag=True, help="Scan every row in key order instead of sampling.")
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="Rows per statement."
)
@click.option(
    "--lock-timeout",
    "lock_timeout_s",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a shard's sweeper lock.",
)
def sweep(
    config_file: str | None, shard_names: tuple[str, ...], full: bool, batch_size: int, lock_timeout_s: float
) -> None:
    """Hard-delete expired and soft-deleted rows on the primaries of the ring in force.

    The ring in force is the one the shards' ring record holds (after a reshard it may have more
    shards than the config lists; a warning says so).

    Without --full it runs the sampling sweeper's cycles back to back, with no time budget, until
    a sample comes back below the stale threshold. With --full it visits every row once. Either
    way it holds the shard's sweeper lock, so it never works a shard at the same time as a server's
    sweeper: running servers give the lock back every second or so, and pause their sweeping
    while this command holds it. It fails, naming the shard, when the lock stays taken for
    --lock-timeout seconds (e.g. by another `kvstore sweep`).

    \b
    Example:
      kvstore sweep --config shards.yaml --shard s0 --full
    """
    settings = settings_or_exit(config_file)
    failures = asyncio.run(_sweep_all(settings, set(shard_names), full, batch_size, lock_timeout_s))
    if failures:
        raise click.ClickException(f"{failures} shard(s) failed")


async def _sweep_all(settings: Settings, only: set[str], full: bool, batch_size: int, lock_timeout_s: float) -> int:
    """Sweep the ring in force (the shards' ring record), or the shards named in ``only``."""
    async with reach_fleet(settings) as fleet:
        if fleet.record.phase is not Phase.STABLE:
            raise click.ClickException(
                f"a migration is in progress (phase {fleet.record.phase}); the running servers' sweepers know which"
                " rows it still needs: sweep by hand after `kvstore reshard cleanup`"
            )
        in_force = fleet.record.shard_names()
        unknown = sorted(only - set(fleet.shards))
        if unknown:
            raise click.ClickException(f"unknown shard {unknown[0]!r}; the ring in force has {', '.join(in_force)}")
        failures = 0
        for name in sorted(only) if only else in_force:
            try:
                await _sweep_shard(fleet.shards[name], settings, full, batch_size, lock_timeout_s)
            except KvError as error:
                failures += 1
                click.echo(f"{name}: FAILED: {error}", err=True)
        return failures


async def _sweep_shard(shard: Shard, settings: Settings, full: bool, batch_size: int, lock_timeout_s: float) -> None:
    await shard.open()
    node = shard.writer()
    lock = node.sweeper_lock()
    # Bounded as a whole: a frozen database answers no lock attempt at all, and must not hang the command.
    bound_s = lock_timeout_s + settings.server.connect_timeout_s + settings.server.request_timeout_s
    try:
        async with asyncio.timeout(bound_s):
            acquired = await acquire_within(lock, lock_timeout_s)
    except TimeoutError:
        raise ShardTimeout(shard.name, f"no answer while taking the sweeper lock ({bound_s:g} s)") from None
    if not acquired:
        raise KvError(
            f"shard {shard.name}: another process is sweeping it (still after {lock_timeout_s:g} s; another"
            " `kvstore sweep`?)"
        )
    try:
        if full:
            progress = FullSweepProgress()
            task = asyncio.create_task(full_sweep(node, batch_size, progress))
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                click.echo(f"{shard.name}: scanned {progress.scanned} rows, deleted {progress.deleted}", err=True)
            await task
            click.echo(f"{shard.name}: scanned {progress.scanned} rows, deleted {progress.deleted}")
        else:
            sampling = replace(settings.sweeper, keys_per_sample=batch_size)
            result = await sweep_cycle(node, sampling, budget_s=None)
            click.echo(
                f"{shard.name}: sampled {result.sampled} rows in {result.batches} batches, deleted {result.deleted}"
                f" ({result.stale:.0%} of the sampled rows were dead)"
            )
    finally:
        await lock.close()
