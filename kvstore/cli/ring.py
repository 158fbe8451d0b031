"""``kvstore ring …``: how the ring in force shares out the key space, and what a change moves."""

import asyncio
import json
import random
import string
from collections.abc import Iterator

import click

from kvstore.cli.fleet import reach_fleet
from kvstore.cli.options import config_option, settings_or_exit, table
from kvstore.config import Settings
from kvstore.errors import InvalidRequest
from kvstore.keys import validate_key
from kvstore.reshard.plan import KeySample, RingDiff, sample_diff
from kvstore.ring import hash_tag
from kvstore.ring_record import RingRecord
from kvstore.topology import Topology


@click.group()
def ring() -> None:
    """Inspect the consistent-hash ring: the one in force (`show`), where a key lives (`locate`), or what
    a change moves (`diff`)."""


@ring.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
def show(config_file: str | None, as_json: bool) -> None:
    """Each shard's weight, virtual nodes and share of the key space, in the ring in force.

    The ring in force is the one the shards' ring record holds; a warning says when the config
    describes another. With no shard answering, the config's ring is shown (and said to be).

    \b
    Example:
      kvstore ring show --config shards.yaml
      kvstore ring show --config shards.yaml --json | jq '.shards[] | {name, share}'
    """
    settings = settings_or_exit(config_file)
    record, unreachable = asyncio.run(_record_in_force(settings))
    if len(unreachable) == len(settings.shards):
        reason = next(iter(unreachable.values()))
        click.echo(f"warning: no shard answered ({reason}); showing the config's ring", err=True)
    shares = record.ring().shares()
    shards = [(str(spec["name"]), str(spec["backend"]), int(spec.get("weight", 1))) for spec in record.shards]
    vnodes = record.vnodes_per_weight
    if as_json:
        document = {
            "epoch": record.epoch,
            "phase": record.phase.value,
            "vnodes_per_weight": vnodes,
            "shards": [
                {"name": name, "backend": backend, "weight": weight, "vnodes": weight * vnodes, "share": shares[name]}
                for name, backend, weight in shards
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    header = ("SHARD", "BACKEND", "WEIGHT", "VNODES", "SHARE")
    rows = [
        (name, backend, str(weight), str(weight * vnodes), _percent(shares[name])) for name, backend, weight in shards
    ]
    click.echo(table(header, rows, right={2, 3, 4}))


@ring.command("locate")
@click.argument("key")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
def locate(key: str, config_file: str | None, as_json: bool) -> None:
    """The shard that owns KEY in the ring in force, and the hash tag that placed it.

    During a migration a moving key has two owners: the new one serves it (reads and writes), and
    reads of a row not copied yet fall back to the previous one. Both are shown.

    \b
    Example:
      kvstore ring locate '{chan42}/msg/0001' --config shards.yaml
    """
    try:
        validate_key(key)
    except InvalidRequest as error:
        raise click.BadParameter(str(error), param_hint="KEY") from None
    settings = settings_or_exit(config_file)
    record, unreachable = asyncio.run(_record_in_force(settings))
    if len(unreachable) == len(settings.shards):
        reason = next(iter(unreachable.values()))
        click.echo(f"warning: no shard answered ({reason}); locating by the config's ring", err=True)
    placement = Topology.of(record).place(key)
    tag = hash_tag(key)
    if as_json:
        document = {
            "key": key,
            "hash_tag": None if tag == key else tag,
            "epoch": record.epoch,
            "phase": record.phase.value,
            "owner": placement.owner,
            "previous_owner": placement.fallback,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"key:      {key}")
    click.echo(f"hashed:   {'the whole key' if tag == key else repr(tag) + ' (hash tag)'}")
    click.echo(f"ring:     epoch {record.epoch}, {record.phase.value}")
    if placement.fallback is None:
        click.echo(f"owner:    {placement.owner}")
        return
    click.echo(f"owner:    {placement.owner} (new ring: serves reads and writes)")
    click.echo(f"previous: {placement.fallback} (reads of a row not copied yet fall back to it)")


async def _record_in_force(settings: Settings) -> tuple[RingRecord, dict[str, str]]:
    async with reach_fleet(settings) as fleet:
        return fleet.record, fleet.unreachable


@ring.command("diff")
@click.argument("old_config", metavar="OLD.yaml", type=click.Path(dir_okay=False))
@click.argument("new_config", metavar="NEW.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Also route N random keys (generated, the same every run; no database is read) through both rings.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
def diff(old_config: str, new_config: str, sample: int | None, as_json: bool) -> None:
    """What moves when the ring of OLD.yaml becomes the ring of NEW.yaml.

    Which part of the key space changes shard, per (old shard -> new shard). The figures are
    exact, computed from the rings' arcs; --sample N checks them by counting N random keys (it
    does not read your keys).

    \b
    Example:
      kvstore ring diff shards.yaml shards-new.yaml
      kvstore ring diff shards.yaml shards-new.yaml --sample 100000 --json | jq .moved_fraction
    """
    old_ring, new_ring = settings_or_exit(old_config).ring(), settings_or_exit(new_config).ring()
    ring_diff = RingDiff.between(old_ring, new_ring)
    counted = None if sample is None else sample_diff(old_ring, new_ring, random_keys(sample))
    show_diff(old_config, new_config, ring_diff, counted, as_json)


def show_diff(old: str, new: str, ring_diff: RingDiff, counted: KeySample | None, as_json: bool) -> None:
    """Print a ring diff (and a key count checking it) as tables, or as JSON."""
    if as_json:
        click.echo(json.dumps(_diff_document(old, new, ring_diff, counted), indent=2))
        return
    click.echo(f"{old} -> {new}")
    moved = f"moved: {_percent(ring_diff.moved_fraction)} of the key space"
    if counted is not None:
        moved += f"; sample: {counted.moved:,} of {counted.keys:,} random keys ({_percent(counted.moved_fraction)})"
    click.echo(moved)
    if ring_diff.moves:
        header = ("FROM", "TO", "KEY SPACE") + (() if counted is None else ("SAMPLED KEYS",))
        rows = []
        for move in ring_diff.moves:
            row: tuple[str, ...] = (move.source, move.target, _percent(move.fraction))
            if counted is not None:
                keys = counted.moves.get((move.source, move.target), 0)
                row += (f"{keys:,} ({_percent(keys / counted.keys)})",)
            rows.append(row)
        click.echo("")
        click.echo(table(header, rows, right={2, 3}))
    click.echo("")
    share_rows = []
    for shard in ring_diff.shards:
        before, after = ring_diff.shares_before.get(shard), ring_diff.shares_after.get(shard)
        change = (after or 0.0) - (before or 0.0)
        share_rows.append((shard, _percent(before), _percent(after), f"{change * 100:+.2f}"))
    click.echo(table(("SHARD", "BEFORE", "AFTER", "CHANGE (POINTS)"), share_rows, right={1, 2, 3}))


def random_keys(count: int, seed: int = 0) -> Iterator[str]:
    """``count`` random 16-character keys, the same sequence for the same seed."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    for _ in range(count):
        yield "".join(rng.choices(alphabet, k=16))


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def _diff_document(old: str, new: str, ring_diff: RingDiff, counted: KeySample | None) -> dict[str, object]:
    document: dict[str, object] = {
        "old": old,
        "new": new,
        "moved_fraction": ring_diff.moved_fraction,
        "moves": [
            {"from": move.source, "to": move.target, "fraction": move.fraction}
            | ({} if counted is None else {"sampled_keys": counted.moves.get((move.source, move.target), 0)})
            for move in ring_diff.moves
        ],
        "shares": {
            shard: {"before": ring_diff.shares_before.get(shard), "after": ring_diff.shares_after.get(shard)}
            for shard in ring_diff.shards
        },
    }
    if counted is not None:
        document["sample"] = {
            "keys": counted.keys,
            "moved": counted.moved,
            "moved_fraction": counted.moved_fraction,
        }
    return document
