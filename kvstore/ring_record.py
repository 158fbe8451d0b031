"""The ring record: which ring owns the keys, and where a migration between two rings stands.

Every request is routed by it, so it is a low-level module beside ``ring.py``; ``reshard/`` only
publishes new records. It is kept apart from ``topology.py``: this is the stored format and reading
it from shards (its one bit of I/O), the topology is the pure per-key rules built from it.

Every shard's primary keeps a copy of the record in ``kvstore_state`` (entry ``ring``). The
admin CLI writes a new record, with the next epoch, to every shard of both rings; front ends
poll the shards they know and follow the highest epoch any of them reports. So a front end
started with an old ``shards.yaml`` still learns the current ring from the shards, and a
migration never depends on every config file being edited in step.

A migration from ring A to ring B goes through these phases (``topology.Placement`` says
what each means for one key; a key is "moving" when its A and B owners differ):

- ``stable``: one ring.
- ``preparing``: moving keys are read as in ``copying`` but not written (503, Retry-After). Only
  kvstore before fencing wrote it (to keep front ends still on ``stable`` from writing a moving
  key's A owner while others write its B owner); ``reshard start`` moves such a record on to
  ``copying``. Now shards refuse a front end behind the record, so ``start`` goes straight there.
- ``copying``: B owns every key. A moving key is written on its B owner, after its A row, if
  any, has been copied there; reads try the B owner, then the A owner when the B owner has no
  row at all (a tombstone on B is an answer: the key was deleted). The copier moves the other
  A rows. Sweepers leave moving keys alone on B: purging a tombstone there would resurrect the
  A copy.
- ``switched``: cutover; B alone serves, A's moved rows await cleanup (sweepers still careful).
- ``aborting``: moving keys are read as in ``copying`` but not written while B's rows of them
  are copied back to A; then ``stable`` on ring A.

Shard specs travel as written in the config (``${ENV}`` references unexpanded), so a secret kept
in an environment variable never lands in the record.
"""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from kvstore.backends.base import RING_STATE, Node
from kvstore.config import Settings
from kvstore.errors import KvError, ShardError, ShardTimeout, describe
from kvstore.ring import HashRing, RingNode

RECORD_NAME = RING_STATE


class Phase(StrEnum):
    STABLE = "stable"
    PREPARING = "preparing"
    COPYING = "copying"
    SWITCHED = "switched"
    ABORTING = "aborting"


ShardSpec = Mapping[str, Any]


@dataclass(frozen=True)
class RingRecord:
    """One epoch of the ring record. ``shards`` is the ring that owns keys (during a migration,
    the target); ``previous`` the ring being migrated from (None when stable)."""

    epoch: int
    phase: Phase
    shards: tuple[ShardSpec, ...]
    vnodes_per_weight: int
    previous: tuple[ShardSpec, ...] | None = None
    migration: str | None = None  # identifies one migration (copier cursors are kept per migration)
    changed_at: float = 0.0  # when this epoch was published (Unix time): steps wait for front ends from here

    def encode(self) -> str:
        return orjson.dumps(
            {
                "epoch": self.epoch,
                "phase": self.phase.value,
                "shards": list(self.shards),
                "previous": None if self.previous is None else list(self.previous),
                "vnodes_per_weight": self.vnodes_per_weight,
                "migration": self.migration,
                "changed_at": self.changed_at,
            }
        ).decode()

    @classmethod
    def decode(cls, text: str) -> "RingRecord":
        try:
            data = orjson.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, found {type(data).__name__}")
            previous = data.get("previous")
            return cls(
                epoch=int(data["epoch"]),
                phase=Phase(data["phase"]),
                shards=tuple(data["shards"]),
                previous=None if previous is None else tuple(previous),
                vnodes_per_weight=int(data["vnodes_per_weight"]),
                migration=data.get("migration"),
                changed_at=float(data.get("changed_at", 0.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise KvError(f"unreadable ring record: {error}") from None

    def ring(self) -> HashRing:
        return spec_ring(self.shards, self.vnodes_per_weight)

    def previous_ring(self) -> HashRing | None:
        return None if self.previous is None else spec_ring(self.previous, self.vnodes_per_weight)

    def shard_names(self) -> list[str]:
        """Every shard the record names, owners first, each once."""
        names = [str(spec["name"]) for spec in self.shards]
        names += [str(spec["name"]) for spec in self.previous or () if spec["name"] not in names]
        return names

    def spec(self, name: str) -> ShardSpec:
        for spec in (*self.shards, *(self.previous or ())):
            if spec["name"] == name:
                return spec
        raise KeyError(name)


def initial_record(settings: Settings) -> RingRecord:
    """The record implied by a config when the shards hold none yet (epoch 0, never published)."""
    return RingRecord(0, Phase.STABLE, settings.shard_specs, settings.vnodes_per_weight)


def spec_ring(specs: Sequence[ShardSpec], vnodes_per_weight: int) -> HashRing:
    return HashRing((RingNode(str(spec["name"]), int(spec.get("weight", 1))) for spec in specs), vnodes_per_weight)


def ring_layout(specs: Sequence[ShardSpec]) -> dict[str, int]:
    """What makes a ring: shard names and weights (DSNs may differ between front ends)."""
    return {str(spec["name"]): int(spec.get("weight", 1)) for spec in specs}


async def read_record(node: Node, timeout_s: float) -> RingRecord | None:
    """The node's ring record; a node that does not answer within ``timeout_s`` (a frozen server
    never does) fails like an unreachable one."""
    try:
        async with asyncio.timeout(timeout_s):
            found = await node.read_state(RECORD_NAME)
    except TimeoutError:
        raise node.failure(ShardTimeout, f"no answer within {timeout_s:g} s") from None
    return None if found is None else RingRecord.decode(found[1])


@dataclass
class RecordPoll:
    """The outcome of asking several shards for their ring record."""

    latest: RingRecord | None = None  # the highest epoch any shard reported
    answered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # shard -> why it could not answer


async def poll_records(nodes: Mapping[str, Node], timeout_s: float) -> RecordPoll:
    """Read the record from every node at once; a shard that cannot answer is noted, not fatal."""
    names = list(nodes)
    outcomes = await asyncio.gather(*(read_record(nodes[name], timeout_s) for name in names), return_exceptions=True)
    poll = RecordPoll()
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, ShardError):
            poll.failed[name] = outcome.detail
        elif isinstance(outcome, Exception):  # e.g. a shard whose schema predates kvstore_state
            poll.failed[name] = f"cannot read the ring record: {describe(outcome)}; run `kvstore shards init`"
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            poll.answered.append(name)
            if outcome is not None and (poll.latest is None or outcome.epoch > poll.latest.epoch):
                poll.latest = outcome
    return poll
