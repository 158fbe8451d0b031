import random
import string
from collections import Counter

import pytest

from kvstore.ring import HashRing, RingNode, hash_tag, prefix_tag, stable_hash


def random_keys(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + string.digits, k=20)) for _ in range(count)]


def test_stable_hash_golden_vectors() -> None:
    # Pinned: if these change, every deployed front end would route keys elsewhere.
    assert stable_hash(b"") == 0xE4A6A0577479B2B4
    assert stable_hash(b"greeting") == 0xD8041D017525074D


def test_owner_golden_vectors() -> None:
    ring = HashRing([RingNode("s0"), RingNode("s1"), RingNode("s2"), RingNode("s3")])
    owners = {key: ring.owner(key) for key in ("greeting", "user/42", "ключ", "a" * 255, "x")}
    assert owners == GOLDEN_OWNERS


GOLDEN_OWNERS = {"greeting": "s2", "user/42": "s1", "ключ": "s0", "a" * 255: "s0", "x": "s1"}

# Redis Cluster's rule: the first "{", then the first "}" after it, with something between.
HASH_TAGS = {
    "{chan42}/msg/0001": "chan42",
    "{chan42}/meta": "chan42",
    "a{b}c{d}e": "b",  # only the first pair counts
    "x}{user/42}": "user/42",  # a "}" before the first "{" is text
    "{{x}}": "{x",
    "{}greeting": "{}greeting",  # empty tag: the whole key
    "{greeting": "{greeting",  # no closing brace
    "greeting": "greeting",
}


@pytest.mark.parametrize(("key", "tag"), HASH_TAGS.items())
def test_hash_tag_follows_redis_cluster(key: str, tag: str) -> None:
    assert hash_tag(key) == tag


def test_tagged_keys_golden_vectors() -> None:
    # Pinned like GOLDEN_OWNERS; a tagged key goes where its tag alone would.
    ring = HashRing([RingNode("s0"), RingNode("s1"), RingNode("s2"), RingNode("s3")])
    keys = ("{chan42}/msg/0001", "{chan42}/meta", "chan42", "{user/42}x", "a{b}c{d}e", "{}greeting")
    assert {key: ring.owner(key) for key in keys} == {
        "{chan42}/msg/0001": "s2",
        "{chan42}/meta": "s2",
        "chan42": "s2",
        "{user/42}x": "s1",
        "a{b}c{d}e": "s1",
        "{}greeting": "s1",
    }


def test_keys_sharing_a_tag_share_a_shard_on_any_ring() -> None:
    for shards in (2, 3, 7):
        ring = HashRing([RingNode(f"s{i}") for i in range(shards)])
        assert len({ring.owner(f"{{chan42}}/msg/{n:04}") for n in range(500)}) == 1


@pytest.mark.parametrize(
    ("prefix", "tag"),
    [("{chan42}/", "chan42"), ("{chan42}", "chan42"), ("a{b}", "b"), ("{chan42", None), ("{}", None), ("chan", None)],
)
def test_prefix_tag_only_when_every_key_under_the_prefix_shares_it(prefix: str, tag: str | None) -> None:
    assert prefix_tag(prefix) == tag


def test_same_ring_in_any_order_maps_keys_the_same() -> None:
    nodes = [RingNode(f"s{i}") for i in range(4)]
    forward, backward = HashRing(nodes), HashRing(reversed(nodes))
    assert all(forward.owner(key) == backward.owner(key) for key in random_keys(2000))


def test_four_equal_shards_are_balanced_within_ten_percent() -> None:
    ring = HashRing([RingNode(f"s{i}") for i in range(4)])
    counts = Counter(ring.owner(key) for key in random_keys(100_000))
    for shard, count in counts.items():
        assert abs(count - 25_000) <= 2_500, (shard, count)


def test_adding_a_fifth_shard_moves_about_a_fifth_and_only_to_it() -> None:
    keys = random_keys(100_000)
    before = HashRing([RingNode(f"s{i}") for i in range(4)])
    after = HashRing([RingNode(f"s{i}") for i in range(5)])
    moves = [(before.owner(key), after.owner(key)) for key in keys]
    moved = [(old, new) for old, new in moves if old != new]
    assert 0.15 <= len(moved) / len(keys) <= 0.25
    assert all(new == "s4" for _, new in moved)


def test_weight_scales_the_share() -> None:
    ring = HashRing([RingNode("light", 1), RingNode("heavy", 3)])
    counts = Counter(ring.owner(key) for key in random_keys(40_000))
    assert 0.70 <= counts["heavy"] / 40_000 <= 0.80
    assert ring.shares()["heavy"] == pytest.approx(0.75, abs=0.05)


def test_shares_cover_the_whole_ring() -> None:
    ring = HashRing([RingNode("a"), RingNode("b", 2), RingNode("c")])
    assert sum(ring.shares().values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("nodes", "message"),
    [([], "at least one"), ([RingNode("a"), RingNode("a")], "unique"), ([RingNode("a", 0)], "weights")],
)
def test_invalid_rings_are_refused(nodes: list[RingNode], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HashRing(nodes)
