"""Where each phase of a migration sends a key, and what sweepers may purge (pure)."""

import random
import string

import pytest

from kvstore.moving import purgeable
from kvstore.ring import HashRing, RingNode
from kvstore.ring_record import Phase, RingRecord
from kvstore.topology import Placement, Topology, write_pause_detail

OLD = HashRing([RingNode("s0"), RingNode("s1")], 64)
NEW = HashRing([RingNode("s0"), RingNode("s1"), RingNode("s2")], 64)


def random_keys(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + string.digits + "/-_", k=16)) for _ in range(count)]


KEYS = random_keys(2000)
MOVING = [key for key in KEYS if OLD.owner(key) != NEW.owner(key)]
STAYING = [key for key in KEYS if OLD.owner(key) == NEW.owner(key)]


def migrating(phase: Phase) -> Topology:
    return Topology(epoch=3, phase=phase, ring=NEW, previous=OLD, migration="m1")


def test_the_generated_keys_include_moving_and_staying_ones() -> None:
    # Every assertion below over MOVING or STAYING would hold vacuously for an empty list.
    assert len(MOVING) >= 100 and len(STAYING) >= 100
    assert {NEW.owner(key) for key in MOVING} == {"s2"}, "adding s2 moves keys onto s2 only"


# Placement of keys in each phase


def test_stable_places_every_key_on_its_owner_alone() -> None:
    stable = Topology(epoch=1, phase=Phase.STABLE, ring=OLD)
    for key in KEYS:
        assert stable.place(key) == Placement(OLD.owner(key))


def test_copying_reads_moving_keys_from_the_old_owner_and_writes_them_on_the_new() -> None:
    copying = migrating(Phase.COPYING)
    for key in MOVING:
        assert copying.place(key) == Placement(NEW.owner(key), fallback=OLD.owner(key))
    for key in STAYING:
        assert copying.place(key) == Placement(NEW.owner(key), fallback=None)


def test_switched_places_every_key_on_its_new_owner_alone() -> None:
    switched = migrating(Phase.SWITCHED)
    for key in KEYS:
        assert switched.place(key) == Placement(NEW.owner(key), fallback=None)


def test_preparing_refuses_writes_to_moving_keys_only_and_says_so() -> None:
    preparing = migrating(Phase.PREPARING)
    for key in MOVING:
        assert preparing.place(key) == Placement(
            NEW.owner(key), fallback=OLD.owner(key), writes_paused_by=Phase.PREPARING
        )
    for key in STAYING:
        assert preparing.place(key) == Placement(NEW.owner(key))
    assert write_pause_detail(Phase.PREPARING) == (
        "writes to this key are paused while the reshard prepares (front ends switch to the new ring) (phase preparing)"
    )
    assert write_pause_detail(Phase.ABORTING).endswith("moves it back to its previous shard (phase aborting)")


def test_aborting_refuses_writes_to_moving_keys_only() -> None:
    aborting = migrating(Phase.ABORTING)
    for key in MOVING:
        assert aborting.place(key) == Placement(
            NEW.owner(key), fallback=OLD.owner(key), writes_paused_by=Phase.ABORTING
        )
    for key in STAYING:
        assert aborting.place(key) == Placement(NEW.owner(key), fallback=None)


def test_topology_of_a_record_routes_like_its_rings() -> None:
    old = ({"name": "s0"}, {"name": "s1"})
    record = RingRecord(5, Phase.COPYING, (*old, {"name": "s2"}), 64, previous=old, migration="m")
    topology = Topology.of(record)
    assert (topology.epoch, topology.phase, topology.migration) == (5, Phase.COPYING, "m")
    for key in KEYS[:300]:
        assert topology.place(key) == migrating(Phase.COPYING).place(key)


# What sweepers may purge


@pytest.mark.parametrize("phase", [Phase.COPYING, Phase.SWITCHED, Phase.ABORTING])
def test_sweepers_leave_moving_keys_alone_on_their_new_owner(phase: Phase) -> None:
    topology = migrating(phase)
    for shard in NEW.names:
        dead = [key for key in KEYS if shard in (NEW.owner(key), OLD.owner(key))]
        moving_in = {key for key in MOVING if NEW.owner(key) == shard}  # all of MOVING on s2, none elsewhere
        assert purgeable(topology, shard, dead) == [key for key in dead if key not in moving_in]


def test_a_stable_ring_may_purge_anything() -> None:
    stable = Topology(epoch=1, phase=Phase.STABLE, ring=NEW)
    for key in KEYS:
        assert all(purgeable(stable, shard, [key]) == [key] for shard in NEW.names)
