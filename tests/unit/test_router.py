"""What the router tells an operator whose config no longer describes the ring in force (pure)."""

from pathlib import Path

from kvstore.config import parse_settings
from kvstore.ring_record import Phase, RingRecord
from kvstore.router import config_drift


def specs(*names: str, weight: int = 1) -> tuple[dict[str, object], ...]:
    return tuple({"name": name, "backend": "sqlite", "primary": f"/d/{name}.db", "weight": weight} for name in names)


SETTINGS = parse_settings(
    {"shards": [dict(spec) for spec in specs("s0", "s1")]}, {}, base_dir=Path("/d"), source=Path("/d/shards.yaml")
)


def test_a_config_describing_either_ring_of_the_record_is_fine() -> None:
    assert config_drift(SETTINGS, RingRecord(4, Phase.STABLE, specs("s0", "s1"), 256)) is None
    migrating = RingRecord(5, Phase.COPYING, specs("s0", "s1", "s2"), 256, previous=specs("s0", "s1"))
    assert config_drift(SETTINGS, migrating) is None


def test_a_stale_config_is_named_with_the_ring_to_write() -> None:
    grown = RingRecord(4, Phase.STABLE, specs("s0", "s1", "s2"), 256)
    assert config_drift(SETTINGS, grown) == (
        "/d/shards.yaml describes a ring the shards no longer use; following their ring record (epoch 4):"
        " update it to shards s0 (weight 1), s1 (weight 1), s2 (weight 1)"
    )
    reweighted = RingRecord(6, Phase.STABLE, specs("s0", "s1", weight=2), 256)
    assert "update it to shards s0 (weight 2), s1 (weight 2)" in (config_drift(SETTINGS, reweighted) or "")
