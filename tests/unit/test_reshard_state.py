"""The ring record and the routing decisions it implies (pure: no database)."""

import dataclasses
import random
import string

import pytest

from kvstore.config import ServerSettings
from kvstore.errors import KvError
from kvstore.reshard.migration import CopyCursor, settle_s
from kvstore.reshard.state import Phase, Placement, RingRecord, Topology, ring_layout, write_pause_detail
from kvstore.ring import HashRing, RingNode

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


# The ring record


SPECS = ({"name": "s0", "dsn": "sqlite:///a.db", "weight": 1}, {"name": "s1", "dsn": "${S1_DSN}", "weight": 2})


@pytest.mark.parametrize(
    "record",
    [
        RingRecord(epoch=0, phase=Phase.STABLE, shards=SPECS, vnodes_per_weight=256),
        RingRecord(
            epoch=7,
            phase=Phase.COPYING,
            shards=(*SPECS, {"name": "s2", "dsn": "postgresql://h/db", "weight": 3}),
            vnodes_per_weight=128,
            previous=SPECS,
            migration="20240101T000000-e7",
            changed_at=1_700_000_123.456789,
        ),
    ],
    ids=["stable", "copying"],
)
def test_ring_record_round_trips_every_field(record: RingRecord) -> None:
    decoded = RingRecord.decode(record.encode())
    assert decoded == record
    for field in dataclasses.fields(RingRecord):
        assert getattr(decoded, field.name) == getattr(record, field.name), field.name
    assert isinstance(decoded.phase, Phase)
    assert decoded.previous is None or isinstance(decoded.previous, tuple)


def test_ring_record_keeps_env_references_unexpanded() -> None:
    record = RingRecord(epoch=1, phase=Phase.STABLE, shards=SPECS, vnodes_per_weight=256)
    assert "${S1_DSN}" in record.encode()
    assert RingRecord.decode(record.encode()).spec("s1")["dsn"] == "${S1_DSN}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        '{"epoch": 1}',  # fields missing
        '{"epoch": "one", "phase": "stable", "shards": [], "vnodes_per_weight": 256}',
        '{"epoch": 1, "phase": "melting", "shards": [], "vnodes_per_weight": 256}',
        '{"epoch": 1, "phase": "stable", "shards": 5, "vnodes_per_weight": 256}',
    ],
)
def test_garbage_ring_record_raises_kv_error(text: str) -> None:
    with pytest.raises(KvError, match=r"^unreadable ring record: "):
        RingRecord.decode(text)


@pytest.mark.parametrize("text", ["[]", "null", "42", '"ring"'])
def test_ring_record_that_is_json_but_no_object_raises_kv_error(text: str) -> None:
    with pytest.raises(KvError, match=r"^unreadable ring record: "):
        RingRecord.decode(text)


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
    for key in MOVING:
        assert not topology.may_purge(NEW.owner(key), key)
        assert topology.may_purge(OLD.owner(key), key)
    for key in STAYING:
        assert topology.may_purge(NEW.owner(key), key)


def test_a_stable_ring_may_purge_anything() -> None:
    stable = Topology(epoch=1, phase=Phase.STABLE, ring=NEW)
    for key in KEYS:
        assert all(stable.may_purge(shard, key) for shard in NEW.names)


# Layout, settle time, copier cursor


def test_ring_layout_is_names_and_weights_only() -> None:
    here: list[dict[str, object]] = [
        {"name": "s0", "dsn": "postgresql://a/x"},
        {"name": "s1", "dsn": "postgresql://b/x", "weight": 2},
    ]
    there: list[dict[str, object]] = [
        {"name": "s0", "dsn": "postgresql://c/y", "weight": 1},
        {"name": "s1", "dsn": "${S1}", "weight": 2},
    ]
    assert ring_layout(here) == ring_layout(there) == {"s0": 1, "s1": 2}
    assert ring_layout(here) != ring_layout([*there[:1], {"name": "s1", "weight": 3}])
    assert ring_layout(here) != ring_layout([*here, {"name": "s2"}])


@pytest.mark.parametrize(
    "server",
    [ServerSettings(), ServerSettings(ring_lease_s=7.5, ring_poll_interval_s=0.5, request_timeout_s=30.0)],
    ids=["defaults", "custom"],
)
def test_settle_time_outlasts_lease_poll_and_request_deadline(server: ServerSettings) -> None:
    expected = server.ring_lease_s + server.ring_poll_interval_s + server.request_timeout_s + 1.0
    assert settle_s(server) == pytest.approx(expected)


def test_copy_cursor_round_trips() -> None:
    cursor = CopyCursor(
        after="user/ключ 42", scanned=1500, copied=37, done=True, started_at=1700000000.25, updated_at=1700000099.5
    )
    assert CopyCursor.decode(cursor.encode()) == cursor
    fresh = CopyCursor()
    assert CopyCursor.decode(fresh.encode()) == fresh
