"""Online resharding, one step at a time: start, copy, cutover, cleanup (or abort), and status.

Each step checks the migration's phase in the ring record, does its work, and publishes the
next record to every shard of both rings (compare-and-set on the epoch, so two admins cannot
interleave steps). Why it loses no write, with no pause:

1. ``start`` publishes ``copying``: front ends write moving keys on their new owner, after
   copying the key's old row there. Every key statement is fenced by the shard's ring epoch
   (``backends/sql.py``): once a shard holds the new record it refuses every statement routed by
   the old one, and the front end routes it again by the new ring (``store.py``). A write on the
   new owner first reads the old row, fenced by the new epoch, so the old owner has the new
   record by then and takes no write by the old ring any more: whatever the copier reads there
   is final.
2. The copier inserts each moving row on its new owner *unless the key already has a row
   there*: any such row was written in ``copying`` (or is a tombstone) and is newer.
3. ``cutover`` requires every source shard to be copied and ``verify`` to be clean, then makes
   the new ring the only one (``switched``); ``cleanup`` deletes moved rows from their old
   owners and publishes ``stable``.

``abort`` (before cutover) publishes ``aborting`` (writes to moving keys get 503 while it runs),
copies the moved keys' rows, tombstones included, back over the old owners' rows, and returns to
the old ring. A record in ``preparing`` (written by an older kvstore, which paused writes there)
goes on to ``copying`` when ``start`` is run again.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson

from kvstore.backends.base import StoredRow
from kvstore.config import Settings
from kvstore.errors import KvError, ReshardError, ShardError
from kvstore.ring import HashRing
from kvstore.ring_record import RECORD_NAME, Phase, RingRecord, initial_record, poll_records, ring_layout
from kvstore.shard import Shard

DEFAULT_BATCH = 500
# The copier's cursor is saved at most this often (and when a source is done): a rerun after a
# crash re-copies at most this long's batches, which is harmless (copies never overwrite), and a
# durable commit per batch measurably slowed it (benchmarks/reshard_copy.py: copier / bare loop went
# from 0.71-0.82 to 0.81-1.01 on PostgreSQL and MariaDB when saving once a second instead).
CURSOR_SAVE_INTERVAL_S = 1.0
CopyProgress = Callable[[str, int, int], None]  # (source shard, rows scanned, rows copied) per batch


async def latest_record(shards: Mapping[str, Shard], settings: Settings) -> RingRecord:
    """The newest record on any of ``shards``; every shard must answer (admin steps need them all)."""
    timeout_s = settings.server.connect_timeout_s + settings.server.request_timeout_s
    poll = await poll_records({name: shard.primary for name, shard in shards.items()}, timeout_s)
    if poll.failed:
        name, detail = next(iter(poll.failed.items()))
        raise ShardError(name, detail)
    return poll.latest or initial_record(settings)


async def publish(shards: Mapping[str, Shard], record: RingRecord, current: RingRecord) -> None:
    """Write ``record`` to every shard of both rings, replacing ``current`` (compare-and-set).

    A shard that already holds ``record`` counts as done, so a step interrupted half-way can be
    run again. Shards are written one by one; front ends follow the highest epoch they see.
    """
    text = record.encode()
    for name in dict.fromkeys([*record.shard_names(), *current.shard_names()]):
        node = shards[name].primary
        found = await node.read_state(RECORD_NAME)
        if found is not None and found[0] == record.epoch and found[1] == text:
            continue
        if found is not None and found[0] != current.epoch:
            raise ReshardError(
                f"shard {name} holds ring epoch {found[0]}, not {current.epoch}: the ring changed under this"
                " command (another admin?); see `kvstore reshard status`"
            )
        expected = None if found is None else found[0]
        if not await node.write_state(RECORD_NAME, text, record.epoch, expected):
            raise ReshardError(f"shard {name}: the ring record changed while it was being written; try again")


def _next(record: RingRecord, phase: Phase, **changes: object) -> RingRecord:
    return replace(record, epoch=record.epoch + 1, phase=phase, changed_at=time.time(), **changes)  # type: ignore[arg-type]


def _expect(record: RingRecord, *phases: Phase, action: str) -> None:
    if record.phase not in phases:
        wanted = " or ".join(phase.value for phase in phases)
        raise ReshardError(f"cannot {action}: the migration is {record.phase.value}, not {wanted}")


async def start(
    shards: Mapping[str, Shard], settings: Settings, target: Settings, announce: Callable[[str], None]
) -> RingRecord:
    """Move the front ends to ``target``'s ring (``copying``); its shards need the schema."""
    current = await latest_record(shards, settings)
    if current.phase is Phase.STABLE:
        if ring_layout(current.shards) == ring_layout(target.shard_specs):
            raise ReshardError("the target ring is the current ring: nothing would move")
        if target.vnodes_per_weight != current.vnodes_per_weight:
            raise ReshardError("changing ring.vnodes_per_weight would move most keys; keep it as it is")
        migration = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-e{current.epoch + 1}"
        copying = _next(current, Phase.COPYING, shards=target.shard_specs, previous=current.shards, migration=migration)
    elif current.phase is Phase.PREPARING and ring_layout(current.shards) == ring_layout(target.shard_specs):
        copying = _next(current, Phase.COPYING)
    else:
        raise ReshardError(f"a migration is already {current.phase.value}; finish it or `kvstore reshard abort`")
    await publish(shards, copying, current)
    announce(f"migration {copying.migration}: front ends write moving keys on their new owners from now on")
    return copying


@dataclass
class CopyCursor:
    """Where the copier stands on one source shard; kept on that shard, so a rerun continues."""

    after: str = ""
    scanned: int = 0
    copied: int = 0
    done: bool = False
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def encode(self) -> str:
        return orjson.dumps(self.__dict__).decode()

    @classmethod
    def decode(cls, text: str) -> "CopyCursor":
        return cls(**orjson.loads(text))


def cursor_name(record: RingRecord) -> str:
    return f"copy:{record.migration}"


async def read_cursor(shard: Shard, record: RingRecord) -> tuple[int, CopyCursor] | None:
    found = await shard.primary.read_state(cursor_name(record))
    return None if found is None else (found[0], CopyCursor.decode(found[1]))


@dataclass(frozen=True)
class CopyPace:
    """How much the copier reads at a time, and how fast (None: as fast as the shards answer)."""

    batch: int = DEFAULT_BATCH
    rows_per_second: float | None = None

    async def keep(self, rows: int, started: float) -> None:
        """Sleep as long as reading ``rows`` since ``started`` (monotonic) was ahead of the pace."""
        if self.rows_per_second is not None:
            ahead = rows / self.rows_per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def copy(shards: Mapping[str, Shard], record: RingRecord, pace: CopyPace, progress: CopyProgress) -> None:
    """Copy every moving row to its new owner, source shard after source shard, in key order."""
    _expect(record, Phase.COPYING, action="copy")
    ring, previous = _rings(record)
    for source in previous.names:
        await _copy_source(shards, source, record, ring, pace, progress)


async def _copy_source(
    shards: Mapping[str, Shard], source: str, record: RingRecord, ring: HashRing, pace: CopyPace, progress: CopyProgress
) -> None:
    started, scanned = time.monotonic(), 0
    saved_at = started
    node = shards[source].primary
    found = await read_cursor(shards[source], record)
    epoch, cursor = found if found is not None else (0, CopyCursor())
    if found is None and not await node.write_state(cursor_name(record), cursor.encode(), 0, None):
        raise ReshardError(f"shard {source}: another copier started at the same time")
    while not cursor.done:
        await pace.keep(scanned, started)
        rows = await node.scan_rows(cursor.after, pace.batch)
        scanned += len(rows)
        copied = 0
        for target, moving in _by_new_owner(rows, source, ring).items():
            copied += await shards[target].primary.import_rows(moving, overwrite=False)
        cursor.scanned += len(rows)
        cursor.copied += copied
        cursor.after = rows[-1].key if rows else cursor.after
        cursor.done = not rows
        cursor.updated_at = time.time()
        if cursor.done or time.monotonic() - saved_at >= CURSOR_SAVE_INTERVAL_S:
            if not await node.write_state(cursor_name(record), cursor.encode(), epoch + 1, epoch):
                raise ReshardError(f"shard {source}: another copier is working on it; let one of them finish")
            epoch, saved_at = epoch + 1, time.monotonic()
        progress(source, len(rows), copied)


def _by_new_owner(rows: Iterable[StoredRow], source: str, ring: HashRing) -> dict[str, list[StoredRow]]:
    moving: dict[str, list[StoredRow]] = defaultdict(list)
    for row in rows:
        owner = ring.owner(row.key)
        if owner != source:
            moving[owner].append(row)
    return moving


async def copy_finished(shards: Mapping[str, Shard], record: RingRecord) -> list[str]:
    """The source shards the copier has not finished (empty when the copy is complete)."""
    _, previous = _rings(record)
    unfinished = []
    for source in previous.names:
        found = await read_cursor(shards[source], record)
        if found is None or not found[1].done:
            unfinished.append(source)
    return unfinished


async def check_cutover(shards: Mapping[str, Shard], record: RingRecord) -> None:
    """Raise unless the migration is copying and the copy is complete (verify comes next)."""
    _expect(record, Phase.COPYING, action="cut over")
    unfinished = await copy_finished(shards, record)
    if unfinished:
        raise ReshardError(f"the copy is not finished on {', '.join(unfinished)}: run `kvstore reshard copy`")


async def cutover(shards: Mapping[str, Shard], record: RingRecord, verified_clean: bool) -> RingRecord:
    """Make the target ring the only ring; only after a complete copy and a clean verify."""
    await check_cutover(shards, record)
    if not verified_clean:
        raise ReshardError("`kvstore verify` is not clean; fix what it reports before the cutover")
    switched = _next(record, Phase.SWITCHED)
    await publish(shards, switched, record)
    return switched


async def cleanup(shards: Mapping[str, Shard], record: RingRecord, batch: int, progress: CopyProgress) -> RingRecord:
    """Delete moved rows from their old owners, batch by batch, then publish ``stable``."""
    _expect(record, Phase.SWITCHED, action="clean up")
    ring, previous = _rings(record)
    for source in previous.names:
        node = shards[source].primary
        after = ""
        while keys := await node.scan_keys(after, batch):
            moved = [key for key in keys if ring.owner(key) != source]
            removed = await node.remove(moved)
            after = keys[-1]
            progress(source, len(keys), removed)
    stable = _next(record, Phase.STABLE, previous=None, migration=None)
    await publish(shards, stable, record)
    return stable


async def abort(shards: Mapping[str, Shard], record: RingRecord, batch: int, progress: CopyProgress) -> RingRecord:
    """Return to the previous ring with every write made during the migration."""
    _expect(record, Phase.PREPARING, Phase.COPYING, Phase.ABORTING, action="abort")
    if record.phase is not Phase.ABORTING:
        aborting = _next(record, Phase.ABORTING)
        await publish(shards, aborting, record)
        record = aborting
    ring, previous = _rings(record)
    for target in ring.names:
        await _copy_back(shards, target, previous, batch, progress)
    assert record.previous is not None
    stable = _next(record, Phase.STABLE, shards=record.previous, previous=None, migration=None)
    await publish(shards, stable, record)
    return stable


async def _copy_back(
    shards: Mapping[str, Shard], target: str, previous: HashRing, batch: int, progress: CopyProgress
) -> None:
    """Move the rows of keys that moved onto ``target`` back to their previous owners, dead ones too
    (a tombstone written during the migration must shadow the old owner's copy)."""
    node = shards[target].primary
    after = ""
    while keys := await node.scan_keys(after, batch):
        after = keys[-1]
        moved = [key for key in keys if previous.owner(key) != target]
        rows: dict[str, list[StoredRow]] = defaultdict(list)
        for row in await node.fetch_rows(moved):
            rows[previous.owner(row.key)].append(row)
        for source, back in rows.items():
            await shards[source].primary.import_rows(back, overwrite=True)
        await node.remove(moved)
        progress(target, len(keys), len(moved))


def _rings(record: RingRecord) -> tuple[HashRing, HashRing]:
    previous = record.previous_ring()
    if previous is None:
        raise ReshardError(f"no migration is in progress (ring epoch {record.epoch} is {record.phase.value})")
    return record.ring(), previous


@dataclass(frozen=True)
class SourceStatus:
    shard: str
    scanned: int
    copied: int
    done: bool
    rows_estimate: int | None  # the source table's size (engine estimate), for the ETA
    rate_per_s: float | None

    @property
    def eta_s(self) -> float | None:
        if self.done:
            return 0.0
        if not self.rate_per_s or self.rows_estimate is None:
            return None
        return max(self.rows_estimate - self.scanned, 0) / self.rate_per_s


async def table_rows(shard: Shard) -> int | None:
    """The shard's rows (exact or the engine's estimate), None when it cannot say."""
    try:
        return (await shard.primary.table_stats()).rows
    except KvError:
        return None


async def copy_status(
    shards: Mapping[str, Shard],
    record: RingRecord,
    source_rows: Callable[[Shard], Awaitable[int | None]] = table_rows,
) -> list[SourceStatus]:
    """The copier's progress per source shard; ``source_rows`` sizes each source for the ETA (a
    server passes its recent counts: a count can scan the whole table)."""
    _, previous = _rings(record)
    statuses = []
    for source in previous.names:
        found = await read_cursor(shards[source], record)
        cursor = CopyCursor(started_at=0, updated_at=0) if found is None else found[1]
        elapsed = cursor.updated_at - cursor.started_at
        rows = await source_rows(shards[source])
        statuses.append(
            SourceStatus(
                shard=source,
                scanned=cursor.scanned,
                copied=cursor.copied,
                done=cursor.done,
                rows_estimate=rows,
                rate_per_s=cursor.scanned / elapsed if elapsed > 0 else None,
            )
        )
    return statuses
