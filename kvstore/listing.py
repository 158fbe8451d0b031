"""Listing keys in byte order across shards, one bounded page at a time.

Keys are ordered by the bytes of their UTF-8 (every backend sorts that way: PostgreSQL's
``COLLATE "C"``, MySQL's ``VARBINARY``, SQLite's binary collation), which for UTF-8 is also the
order of code points. A page asks every shard that may hold keys of the prefix for one index
range scan of at most ``limit`` rows, live or dead (``Node.list_range``), and merges them:

- the work per page is bounded: at most ``limit`` rows per shard queried, whatever the table
  size and however many dead rows the range holds. Dead rows are skipped, so a page may be
  short, or even empty, and still have a ``next`` cursor: the scan moved past them;
- a shard that returned ``limit`` rows may hold more keys beyond its last one, so the page
  stops at the *frontier*, the nearest such last key: everything up to it was seen on every
  shard, so no key is skipped or shown twice. ``next`` is the last key the page covered;
- no total count is kept or computed (a count is a scan of the whole range);
- with values, a page also stops at a byte budget of values (at least one item), and the values
  are read in a second statement per shard for the page's keys only.

A prefix that holds a complete hash tag (``{chan42}/``) is answered by the tag's shard alone.
During a migration the shards of both rings are read and the moving-key rules decide which row
speaks for each key (``moving.choose``), on primaries, as for any moving key.
"""

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvstore import moving
from kvstore.backends.base import ListedRow, Node, Row
from kvstore.ring import prefix_tag
from kvstore.shard import Shard
from kvstore.topology import Topology

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
VALUE_BUDGET_BYTES = 1024 * 1024  # values per page; a page holds at least one item whatever its size
_LAST_CODE_POINT = 0x10FFFF


@dataclass(frozen=True, slots=True)
class ListQuery:
    prefix: str = ""
    after: str | None = None  # exclusive: the position a previous page ended at, in walk order
    reverse: bool = False
    limit: int = DEFAULT_LIMIT
    values: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    row: Row  # its value only when the query asked for values


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_after: str | None  # where the next page starts (exclusive), None at the end


@dataclass(frozen=True, slots=True)
class _Scan:
    """One shard's answer: the rows it listed, and the node that listed them (values come from it)."""

    shard: str
    node: Node
    rows: list[ListedRow]
    complete: bool  # fewer rows than asked for: nothing more in the range on this shard


_Chosen = tuple[str, ListedRow]  # a row that speaks for its key, and the shard that holds it


def key_range(query: ListQuery) -> tuple[str, str | None] | None:
    """``[start, stop)`` for the query's next page, or None when nothing can be left in it."""
    start, stop = query.prefix, prefix_end(query.prefix)
    if query.after is not None:
        if query.reverse:
            stop = query.after if stop is None else min(stop, query.after, key=str.encode)
        else:
            # Keys hold no NUL, so the smallest key after ``after`` is ``after + "\x01"``.
            start = max(start, query.after + "\x01", key=str.encode)
    if stop is not None and start.encode() >= stop.encode():
        return None
    return start, stop


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix`` (None: no bound)."""
    trimmed = prefix.rstrip(chr(_LAST_CODE_POINT))
    if not trimmed:
        return None
    last = ord(trimmed[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: UTF-8 has no bytes for them
        last = 0xE000
    return trimmed[:-1] + chr(last)


def shards_to_ask(topology: Topology, prefix: str) -> list[str]:
    """The shards that may hold keys starting with ``prefix``, under either ring of a migration."""
    tag = prefix_tag(prefix)
    if tag is not None:
        placement = topology.place("{" + tag + "}")
        return [placement.owner] if placement.fallback is None else [placement.owner, placement.fallback]
    names = list(topology.ring.names)
    if topology.previous is not None:
        names += [name for name in topology.previous.names if name not in names]
    return names


def merge(topology: Topology, scans: Sequence[_Scan], query: ListQuery) -> tuple[list[_Chosen], str | None]:
    """The page's ``(shard, row)`` items and where the next page starts (see the module docstring)."""
    descending = query.reverse
    ends = [scan.rows[-1].key for scan in scans if not scan.complete and scan.rows]
    frontier = None
    if ends:
        frontier = max(ends, key=str.encode) if descending else min(ends, key=str.encode)
    found: dict[str, dict[str, ListedRow]] = defaultdict(dict)
    for scan in scans:
        for row in scan.rows:
            found[row.key][scan.shard] = row
    keys = sorted(found, key=str.encode, reverse=descending)
    if frontier is not None:
        bound = frontier.encode()
        keys = [key for key in keys if (key.encode() >= bound if descending else key.encode() <= bound)]
    items: list[_Chosen] = []
    budget = VALUE_BUDGET_BYTES
    for key in keys:
        by_shard = found[key]
        chosen = _choose(topology, key, by_shard)
        if chosen is None or not chosen.live:
            continue
        shard = next(name for name, candidate in by_shard.items() if candidate is chosen)
        items.append((shard, chosen))
        budget -= chosen.size
        if len(items) == query.limit or (query.values and budget <= 0):
            return items, key
    return items, frontier


def _choose(topology: Topology, key: str, by_shard: dict[str, ListedRow]) -> ListedRow | None:
    if len(by_shard) == 1 and topology.previous is None:
        return next(iter(by_shard.values()))
    return moving.choose(topology, key, by_shard)


async def list_page(
    topology: Topology,
    shards: dict[str, Shard],
    query: ListQuery,
    *,
    strong: bool,
    read_after: Mapping[str, str] | None,
) -> Page:
    """One page of ``query``. ``read_after`` maps shards to the positions of writes (a client's
    read-after tokens): those shards' replicas must have replayed them, and the shards it does not
    name are read on their primaries, as a GET does for a key whose shard no token names."""
    bounds = key_range(query)
    if bounds is None:
        return Page([], None)
    start, stop = bounds
    migrating = topology.previous is not None

    async def scan(name: str) -> _Scan:
        shard = shards[name]
        listed: list[tuple[Node, list[ListedRow]]] = []

        async def on(node: Node) -> None:
            listed.append((node, await node.list_range(start, stop, descending=query.reverse, limit=query.limit)))

        position = None if read_after is None else read_after.get(name)
        primary_only = strong or migrating or (read_after is not None and position is None)
        await shard.read_with(on, strong=primary_only, after_position=position)
        node, rows = listed[-1]
        return _Scan(name, node, rows, complete=len(rows) < query.limit)

    scans = await asyncio.gather(*(scan(name) for name in shards_to_ask(topology, query.prefix)))
    chosen, next_after = merge(topology, scans, query)
    if not query.values:
        return Page([Item(row.key, Row.from_columns(row.ttl, row.version)) for _, row in chosen], next_after)
    return Page(await _with_values(scans, chosen), next_after)


async def _with_values(scans: Sequence[_Scan], chosen: list[_Chosen]) -> list[Item]:
    """The chosen rows with their values, read from the node that listed each; a row that died or
    changed since it was listed is shown as it is now, or left out when no longer live."""
    nodes = {scan.shard: scan.node for scan in scans}
    keys_by_shard: dict[str, list[str]] = defaultdict(list)
    for shard, row in chosen:
        keys_by_shard[shard].append(row.key)
    fetched = await asyncio.gather(*(nodes[shard].fetch_rows(keys) for shard, keys in keys_by_shard.items()))
    current = {row.key: row for rows in fetched for row in rows}
    items = []
    for _, listed in chosen:
        now = current.get(listed.key)
        if now is not None and now.live:
            items.append(Item(now.key, Row.from_columns(now.ttl, now.version, now.value)))
    return items
