from collections import Counter
from pathlib import Path

import pytest

from kvstore.backends import PoolSettings, create_node
from kvstore.config import parse_settings
from kvstore.errors import ConfigError
from kvstore.replicas import SELECTIONS, ReplicaSet, Selection, least_outstanding, round_robin

BOTH = [True, True]


def picks(
    count: int, in_flight: list[int], in_rotation: list[bool], select: Selection = least_outstanding
) -> Counter[int | None]:
    return Counter(select(in_flight, in_rotation, turn) for turn in range(count))


def test_round_robin_cycles_through_replicas_in_rotation_only() -> None:
    assert [round_robin([0, 0, 0], [True, False, True], turn) for turn in range(4)] == [0, 2, 0, 2]


def test_round_robin_ignores_what_is_in_flight() -> None:
    assert picks(100, [50, 0], BOTH, round_robin) == {0: 50, 1: 50}


@pytest.mark.parametrize("select", [round_robin, least_outstanding])
def test_no_replica_in_rotation_means_none(select: Selection) -> None:
    assert select([], [], 0) is None
    assert select([0, 0], [False, False], 3) is None


def test_least_outstanding_picks_the_fewest_in_flight() -> None:
    assert picks(10, [3, 1, 2], [True, True, True]) == {1: 10}


def test_least_outstanding_skips_replicas_out_of_rotation_however_idle() -> None:
    assert picks(10, [0, 7, 9], [False, True, True]) == {1: 10}


def test_least_outstanding_breaks_ties_round_robin() -> None:
    assert [least_outstanding([2, 2, 2], [True, True, True], turn) for turn in range(6)] == [0, 1, 2, 0, 1, 2]
    assert picks(100, [1, 5, 1], [True, True, True]) == {0: 50, 2: 50}


def test_least_outstanding_with_equal_replicas_spreads_like_round_robin() -> None:
    """Acquire and release in turn, as sequential reads do: the load stays even."""
    in_flight, served = [0, 0], Counter[int]()
    for turn in range(1000):
        index = least_outstanding(in_flight, BOTH, turn)
        assert index is not None
        in_flight[index] += 1
        served[index] += 1
        if turn % 3 == 2:  # reads finish in batches
            in_flight = [0, 0]
    assert abs(served[0] - served[1]) <= 2


def test_least_outstanding_steers_reads_from_a_slow_replica() -> None:
    """Replica 1 answers 4x slower: it keeps reads in flight longer, so it is given fewer."""
    durations = [1, 4]
    finishing: list[tuple[int, int]] = []  # (time, replica)
    in_flight, served = [0, 0], Counter[int]()
    for now in range(4000):
        for done in [item for item in finishing if item[0] <= now]:
            finishing.remove(done)
            in_flight[done[1]] -= 1
        while sum(in_flight) < 8:  # 8 concurrent readers
            index = least_outstanding(in_flight, BOTH, now)
            assert index is not None
            in_flight[index] += 1
            served[index] += 1
            finishing.append((now + durations[index], index))
    assert served[0] > 3 * served[1]


SHARDS = [{"name": "s0", "backend": "sqlite", "primary": "a.db"}]


def test_every_selection_is_accepted_by_the_config_and_nothing_else(tmp_path: Path) -> None:
    def parse(selection: str) -> str:
        document = {"server": {"replica_selection": selection}, "shards": SHARDS}
        return parse_settings(document, {}, tmp_path).server.replica_selection

    assert parse_settings({"shards": SHARDS}, {}, tmp_path).server.replica_selection == "least_outstanding"
    assert [parse(name) for name in SELECTIONS] == list(SELECTIONS)
    with pytest.raises(ConfigError, match=r"^server\.replica_selection: must be round_robin or least_outstanding"):
        parse("random")


def replica_set(selection: str) -> ReplicaSet:
    """Two replicas in rotation; their nodes are never opened (choosing one needs no database)."""
    pool = PoolSettings(1, 1, connect_timeout_s=1, statement_timeout_s=1)
    primary, *replicas = (
        create_node("postgres", "s0", role, "postgresql://kv@127.0.0.1:1/kv", pool)
        for role in ("primary", "replica1", "replica2")
    )
    replica_set = ReplicaSet("s0", primary, replicas, max_lag_s=5, probe_timeout_s=1, selection=selection)
    for health in replica_set.replicas:
        health.in_rotation = True
    return replica_set


def test_acquire_counts_reads_in_flight_until_release() -> None:
    replicas = replica_set("least_outstanding")
    first, second = replicas.acquire(), replicas.acquire()
    assert first is not None and second is not None and first is not second
    third = replicas.acquire()
    assert third is not None
    assert [health.in_flight for health in replicas.replicas] in ([2, 1], [1, 2])
    for health in (first, second, third):
        replicas.release(health)
    assert [health.in_flight for health in replicas.replicas] == [0, 0]


def test_a_replica_busy_with_a_slow_read_gets_the_next_ones_not_round_robin() -> None:
    replicas = replica_set("least_outstanding")
    slow = replicas.acquire()
    assert slow is not None
    for _ in range(5):
        quick = replicas.acquire()
        assert quick is not None and quick is not slow
        replicas.release(quick)
    assert replicas.pick() is not slow.node


def test_round_robin_alternates_whatever_is_in_flight() -> None:
    replicas = replica_set("round_robin")
    held = [replicas.acquire() for _ in range(4)]
    assert [health.node.role for health in held if health is not None] == ["replica1", "replica2"] * 2


def test_a_replica_taken_out_is_not_chosen_and_none_left_means_none() -> None:
    replicas = replica_set("least_outstanding")
    one, two = (health.node for health in replicas.replicas)
    replicas.take_out(one, "connection lost")
    assert {replicas.pick() for _ in range(4)} == {two}
    replicas.take_out(two, "connection lost")
    assert replicas.pick() is None and replicas.acquire() is None


def test_an_unknown_selection_is_refused() -> None:
    with pytest.raises(ValueError, match="random"):
        replica_set("random")
