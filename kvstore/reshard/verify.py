"""``kvstore verify``: every live key sits where the ring says, and moved copies agree (VDiff-style).

Every shard of the record's rings is scanned in key order, batch by batch. A live row is:

- *in place* on the shard that owns its key;
- an *old copy* on the shard a migration moves it from (until cleanup): its new owner's row
  is then fetched and compared. The same version means a faithful copy; a higher version on the
  new owner (or a tombstone there) means the key was written since; no row at all on the new
  owner, or an older version there, is a defect (*missing* / *stale*);
- *misplaced* anywhere else: a row no read will ever find.

Clean means no missing, stale or misplaced row. Versions of one key are comparable across
shards because a moved row keeps its version and every later write increases it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from kvstore.backends.base import StoredRow
from kvstore.ring_record import RingRecord
from kvstore.shard import Shard
from kvstore.topology import Topology

EXAMPLES = 10


@dataclass
class Finding:
    key: str
    shard: str  # where the row is
    owner: str  # where the ring says it belongs
    detail: str


@dataclass
class VerifyReport:
    scanned: int = 0
    in_place: int = 0
    copies_identical: int = 0
    copies_updated: int = 0  # written or deleted on the new owner since they were copied
    missing: int = 0
    stale: int = 0
    misplaced: int = 0
    examples: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.missing == self.stale == self.misplaced == 0

    def note(self, finding: Finding) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(finding)


async def verify(shards: Mapping[str, Shard], record: RingRecord, batch: int) -> VerifyReport:
    report = VerifyReport()
    topology = Topology.of(record)  # both rings, built once
    for name in record.shard_names():
        after = ""
        while rows := await shards[name].primary.scan_rows(after, batch):
            after = rows[-1].key
            report.scanned += len(rows)
            await _check_batch(shards, topology, name, rows, report)
    return report


async def _check_batch(
    shards: Mapping[str, Shard], topology: Topology, shard: str, rows: list[StoredRow], report: VerifyReport
) -> None:
    ring, previous = topology.ring, topology.previous
    copies: dict[str, list[StoredRow]] = {}
    for row in rows:
        owner = ring.owner(row.key)
        if owner == shard:
            report.in_place += 1
        elif previous is not None and previous.owner(row.key) == shard:
            copies.setdefault(owner, []).append(row)
        else:
            report.misplaced += 1
            report.note(Finding(row.key, shard, owner, "misplaced: no read routes here"))
    for owner, old_rows in copies.items():
        new_rows = {row.key: row for row in await shards[owner].primary.fetch_rows([row.key for row in old_rows])}
        for old in old_rows:
            _compare(old, new_rows.get(old.key), shard, owner, report)


def _compare(old: StoredRow, new: StoredRow | None, shard: str, owner: str, report: VerifyReport) -> None:
    if new is None:
        report.missing += 1
        report.note(Finding(old.key, shard, owner, "missing on its new owner"))
    elif new.version < old.version:
        report.stale += 1
        report.note(Finding(old.key, shard, owner, f"new owner has version {new.version} < {old.version}"))
    elif new.version == old.version and (new.value, new.ttl) == (old.value, old.ttl):
        report.copies_identical += 1
    elif new.version == old.version:
        report.stale += 1
        report.note(Finding(old.key, shard, owner, "same version, different value or ttl"))
    else:
        report.copies_updated += 1
