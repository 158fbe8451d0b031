import random
import string

import pytest

from kvstore.reshard.plan import KEY_SPACE, RingDiff, sample_diff
from kvstore.ring import HashRing, RingNode


def random_keys(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_letters + string.digits, k=20)) for _ in range(count)]


def equal_ring(count: int) -> HashRing:
    return HashRing(RingNode(f"s{i}") for i in range(count))


def test_adding_a_fifth_equal_shard_moves_a_fifth_to_it_and_a_sample_agrees() -> None:
    old, new = equal_ring(4), equal_ring(5)
    diff = RingDiff.between(old, new)
    assert diff.moved_fraction == pytest.approx(0.20, abs=0.03)
    assert {move.target for move in diff.moves} == {"s4"}
    assert {move.source for move in diff.moves} == {"s0", "s1", "s2", "s3"}
    sample = sample_diff(old, new, random_keys(100_000))
    assert sample.keys == 100_000
    assert abs(sample.moved_fraction - diff.moved_fraction) < 0.01
    for move in diff.moves:
        counted = sample.moves[move.source, move.target] / sample.keys
        assert abs(counted - move.fraction) < 0.01, move


def test_the_moved_space_is_what_the_new_shard_gains() -> None:
    diff = RingDiff.between(equal_ring(4), equal_ring(5))
    assert diff.moved_fraction == pytest.approx(diff.shares_after["s4"], abs=1e-12)
    assert diff.shares_before.get("s4") is None
    assert diff.shards == ("s0", "s1", "s2", "s3", "s4")


def test_identical_rings_move_nothing() -> None:
    diff = RingDiff.between(equal_ring(4), equal_ring(4))
    assert diff.moves == ()
    assert diff.moved_fraction == 0.0
    assert sample_diff(equal_ring(4), equal_ring(4), random_keys(1000)).moved == 0


def test_a_reweight_moves_keys_only_to_the_reweighted_shard() -> None:
    old = HashRing([RingNode("a"), RingNode("b"), RingNode("c")])
    heavier = HashRing([RingNode("a"), RingNode("b", 2), RingNode("c")])
    grow = RingDiff.between(old, heavier)
    assert grow.moves and all(move.target == "b" and move.source != "b" for move in grow.moves)
    assert grow.moved_fraction == pytest.approx(grow.shares_after["b"] - grow.shares_before["b"], abs=1e-12)
    shrink = RingDiff.between(heavier, old)
    assert shrink.moves and all(move.source == "b" and move.target != "b" for move in shrink.moves)
    assert shrink.moved_fraction == pytest.approx(grow.moved_fraction, abs=1e-12)


def test_removing_a_shard_moves_exactly_its_share_away() -> None:
    diff = RingDiff.between(equal_ring(5), equal_ring(4))
    assert {move.source for move in diff.moves} == {"s4"}
    assert diff.moved_fraction == pytest.approx(diff.shares_before["s4"], abs=1e-12)
    assert "s4" not in diff.shares_after


def test_fractions_add_up() -> None:
    old = HashRing([RingNode("a"), RingNode("b", 3), RingNode("c")])
    new = HashRing([RingNode("b", 2), RingNode("c"), RingNode("d", 2)])
    diff = RingDiff.between(old, new)
    assert sum(move.span for move in diff.moves) == pytest.approx(diff.moved_fraction * KEY_SPACE, rel=1e-12)
    assert sum(diff.shares_before.values()) == pytest.approx(1.0)
    assert sum(diff.shares_after.values()) == pytest.approx(1.0)
    # Per shard: what it had, minus what leaves it, plus what arrives, is what it has after.
    for shard in diff.shards:
        leaving = sum(move.fraction for move in diff.moves if move.source == shard)
        arriving = sum(move.fraction for move in diff.moves if move.target == shard)
        before, after = diff.shares_before.get(shard, 0.0), diff.shares_after.get(shard, 0.0)
        assert before - leaving + arriving == pytest.approx(after, abs=1e-12), shard
    assert [move.span for move in diff.moves] == sorted((move.span for move in diff.moves), reverse=True)


def test_a_sample_of_no_keys_moves_nothing() -> None:
    sample = sample_diff(equal_ring(2), equal_ring(3), [])
    assert (sample.keys, sample.moved, sample.moved_fraction) == (0, 0, 0.0)
