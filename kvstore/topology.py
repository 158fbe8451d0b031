"""The topology: a ring record turned into where each key's operations go (pure).

Router, store and sweepers consult it on every request and every purge, so it is a low-level
module beside ``ring_record.py`` (the record's format and reading it from shards), not part of
``reshard/``. ``ring_record.py`` describes what each migration phase means for a key; ``place``
is those rules; what operations do about a moving key is ``moving.py``.
"""

from dataclasses import dataclass

from kvstore.ring import HashRing
from kvstore.ring_record import Phase, RingRecord


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one key's operations go under a topology."""

    owner: str  # the shard that holds the key's current row and takes its writes
    fallback: str | None = None  # where a row not yet copied may still be: read (and copy) from here
    writes_paused_by: Phase | None = None  # preparing / aborting: the phase that refuses writes for now


# Why a phase pauses writes to moving keys, as the 503 detail tells a client.
_WRITE_PAUSES = {
    Phase.PREPARING: "the reshard prepares (front ends switch to the new ring)",
    Phase.ABORTING: "the reshard abort moves it back to its previous shard",
}


def write_pause_detail(phase: Phase) -> str:
    return f"writes to this key are paused while {_WRITE_PAUSES[phase]} (phase {phase.value})"


@dataclass(frozen=True)
class Topology:
    """A ring record turned into routing decisions (pure: the router applies it)."""

    epoch: int
    phase: Phase
    ring: HashRing
    previous: HashRing | None = None
    migration: str | None = None

    @classmethod
    def of(cls, record: RingRecord) -> "Topology":
        return cls(record.epoch, record.phase, record.ring(), record.previous_ring(), record.migration)

    def place(self, key: str) -> Placement:
        owner = self.ring.owner(key)
        if self.previous is None or self.phase in (Phase.STABLE, Phase.SWITCHED):
            return Placement(owner)
        source = self.previous.owner(key)
        if source == owner:
            return Placement(owner)
        return Placement(owner, fallback=source, writes_paused_by=None if self.phase is Phase.COPYING else self.phase)
