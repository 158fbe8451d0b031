"""The ring record: its stored form and what makes a ring (pure: no database)."""

import dataclasses

import pytest

from kvstore.errors import KvError
from kvstore.ring_record import Phase, RingRecord, ring_layout

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
