"""Options and helpers shared by every command."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from kvstore.config import CONFIG_ENV, Settings, load_settings
from kvstore.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def config_option(function: F) -> F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"Path to shards.yaml (default: ${CONFIG_ENV}, else ./shards.yaml).",
    )(function)


def settings_or_exit(config_file: str | None) -> Settings:
    """Load settings, or exit non-zero with one line naming the problem."""
    try:
        return load_settings(config_file)
    except ConfigError as error:
        raise click.ClickException(f"config error: {error}") from None


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    """Plain aligned columns; the columns in ``right`` (numbers) are right-aligned."""
    right = right or set()
    lines = [header, *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )
