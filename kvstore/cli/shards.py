"""``kvstore shards …``: schema and shard tooling."""

import asyncio

import click

from kvstore.cli.options import config_option, settings_or_exit
from kvstore.config import Settings
from kvstore.errors import KvError
from kvstore.router import Router


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
    router = Router.from_settings(settings)
    failures = 0
    try:
        for shard in router.shards.values():
            try:
                await shard.open()
                await shard.primary.ensure_schema()
            except KvError as error:
                failures += 1
                click.echo(f"{shard.name}: FAILED: {error}", err=True)
            else:
                click.echo(f"{shard.name}: schema ok ({shard.backend})")
    finally:
        await router.close(5.0)
    return failures
