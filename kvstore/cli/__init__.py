"""The ``kvstore`` command: click entry points for serving and shard tooling."""

import click

from kvstore import __version__, logs
from kvstore.cli.cluster import cluster
from kvstore.cli.kv import kv
from kvstore.cli.reshard import reshard, verify_command
from kvstore.cli.ring import ring
from kvstore.cli.serve import serve
from kvstore.cli.shards import shards
from kvstore.cli.sweep import sweep


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kvstore")
def main() -> None:
    """kvstore: a key-value store server over consistent-hashed SQL shards."""
    logs.configure_plain()  # `serve` replaces it with JSON lines once its workers start


main.add_command(serve)
main.add_command(shards)
main.add_command(sweep)
main.add_command(cluster)
main.add_command(ring)
main.add_command(kv)
main.add_command(reshard)
main.add_command(verify_command)
