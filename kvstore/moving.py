"""The moving-key rules, over many keys at once: how a migration's keys are read, written and swept.

While a migration copies rows to a new ring, a key whose owner changes has two shards: its
``owner`` in the new ring, which serves it, and its ``source`` in the previous ring, where a row
not copied yet still is. ``topology.Topology.place`` says which keys move; this module is what
every operation does about it, so that single reads and writes, listings, batches, transactions
and the sweeper apply one set of rules:

- **read**: the owner's row when it has one, whatever its state (a tombstone or an expired row
  there is newer than anything the source holds), else the source's row;
- **write**: first copy the source's live row to the owner unless the owner has a row, so that
  versions continue their lineage and a conditional write sees the key's real state;
- **sweep**: the owner's dead rows of moving keys are not purged until the migration ends, since
  purging one would bring back the older copy on the source; resharding's cleanup removes the
  source's rows instead.

Reads and copies go to primaries: a replica's "no row" may only mean "not replayed yet".
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from kvstore.backends.base import Node, Row, StoredRow
from kvstore.topology import Topology

R = TypeVar("R")


async def read(owner: Node, source: Node, keys: Sequence[str]) -> dict[str, Row]:
    """The live rows (with values) of moving ``keys``: the owner's where it has one, else the source's."""
    found = {row.key: row for row in await owner.fetch_rows(keys)}
    rows = {key: _live(row) for key, row in found.items() if row.live}
    missing = [key for key in keys if key not in found]
    if missing:
        rows |= await source.get_many(missing)
    return rows


async def pull(owner: Node, source: Node, keys: Sequence[str]) -> None:
    """Before writing moving ``keys`` on their owner: copy the source's live rows the owner lacks."""
    rows = [row for row in await source.fetch_rows(keys) if row.live]
    if rows:
        await owner.import_rows(rows, overwrite=False)


def purgeable(topology: Topology, shard: str, keys: Iterable[str]) -> list[str]:
    """Those of ``keys`` whose dead rows on ``shard`` a sweeper may hard-delete now: not those
    moving onto ``shard`` (their tombstone there is newer than the copy on the source)."""
    previous = topology.previous
    if previous is None:
        return list(keys)
    return [key for key in keys if not (topology.ring.owner(key) == shard and previous.owner(key) != shard)]


def choose(topology: Topology, key: str, rows: Mapping[str, R]) -> R | None:
    """The row that speaks for ``key`` among the rows several shards returned (by shard name),
    for reads that scan shards rather than ask for keys (listing): the owner's, else the source's
    when the key is moving; rows elsewhere are stale leftovers of a migration and are ignored."""
    placement = topology.place(key)
    row = rows.get(placement.owner)
    if row is None and placement.fallback is not None:
        row = rows.get(placement.fallback)
    return row


def _live(row: StoredRow) -> Row:
    return Row.from_columns(row.ttl, row.version, row.value)
