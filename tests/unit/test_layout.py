"""Where a local cluster's servers live (``kvstore/cluster/layout.py``): planning and its state file."""

from pathlib import Path

import pytest

from kvstore.cluster.layout import ClusterError, ClusterLayout


def test_an_ha_postgres_layout_is_an_etcd_and_three_members_per_shard() -> None:
    ports = list(range(7000, 7000 + ClusterLayout.ports_needed("postgres", shards=2, replicas=0, ha=True)))
    layout = ClusterLayout.plan_ha("postgres", Path("/c"), shards=2, ports=ports, durable=False)
    assert len(ports) == 2 + 2 * 3 * 2  # etcd (client, peer); each member: PostgreSQL, Patroni's API
    assert layout.store is not None and (layout.store.port, layout.store.service_ports) == (7000, (7001,))
    assert {shard: [m.name for m in members] for shard, members in layout.shards().items()} == {
        "s0": ["s0/node1", "s0/node2", "s0/node3"],
        "s1": ["s1/node1", "s1/node2", "s1/node3"],
    }
    node = layout.shards()["s0"][0]
    assert (node.port, node.service_ports, node.data_dir) == (7002, (7003,), Path("/c/s0/node1"))


def test_an_ha_galera_layout_has_no_store_and_four_ports_per_node() -> None:
    ports = list(range(7000, 7012))
    layout = ClusterLayout.plan_ha("mysql", Path("/c"), shards=1, ports=ports, durable=True)
    assert layout.store is None
    assert [m.service_ports for m in layout.shards()["s0"]] == [
        (7001, 7002, 7003),
        (7005, 7006, 7007),
        (7009, 7010, 7011),
    ]


def test_the_state_file_round_trips_and_an_older_one_still_reads(tmp_path: Path) -> None:
    ha = ClusterLayout.plan_ha("postgres", tmp_path, shards=1, ports=list(range(7000, 7008)), durable=False)
    assert ClusterLayout.from_json(tmp_path, ha.to_json()) == ha
    plain = ClusterLayout.plan("mysql", tmp_path, shards=1, replicas=1, ports=[7000, 7001], durable=True)
    assert '"ha"' not in plain.to_json() and '"service_ports"' not in plain.to_json()
    assert ClusterLayout.from_json(tmp_path, plain.to_json()) == plain


def test_an_ha_layout_needs_its_ports_and_a_manager() -> None:
    with pytest.raises(ClusterError, match="need 8 distinct ports"):
        ClusterLayout.plan_ha("postgres", Path("/c"), shards=1, ports=[1, 2, 3], durable=False)
    with pytest.raises(ClusterError, match="unknown backend 'sqlite'"):
        ClusterLayout.plan_ha("sqlite", Path("/c"), shards=1, ports=[], durable=False)
