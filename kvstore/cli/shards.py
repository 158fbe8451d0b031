"""``kvstore shards …``: schema and shard tooling."""

import asyncio

import click

from kvstore.cli.options import config_option, settings_or_exit
from kvstore.config import Settings
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
