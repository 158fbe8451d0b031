"""The pure parts of kvstore/status.py: the server's counters as /v1/status gives them, readiness."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kvstore.status import Readiness, ReplicaStatus, server_metrics


def test_server_metrics_sums_statuses_and_keeps_cumulative_buckets_with_inf_as_null() -> None:
    registry = CollectorRegistry()
    requests = Counter("kvstore_http_requests", "", ["op", "status"], registry=registry)
    latency = Histogram(
        "kvstore_http_request_duration_seconds", "", ["op"], buckets=(0.001, 0.01, 0.1), registry=registry
    )
    deleted = Counter("kvstore_sweeper_deleted_rows", "", ["shard"], registry=registry)
    stale = Gauge("kvstore_sweeper_stale_ratio", "", ["shard"], registry=registry)
    requests.labels("get", "200").inc(5)
    requests.labels("get", "404").inc(2)
    requests.labels("put", "503").inc()
    for seconds in (0.0005, 0.005, 0.005, 0.05, 3.0):
        latency.labels("get").observe(seconds)
    deleted.labels("s0").inc(42)
    stale.labels("s0").set(0.125)

    found = server_metrics(registry.collect())

    assert isinstance(found["at"], int) and found["at"] > 1_700_000_000_000
    assert found["requests"] == {
        "get": {
            "by_status": {"200": 5, "404": 2},
            "latency": {
                "count": 5,
                "sum": 0.0005 + 0.005 + 0.005 + 0.05 + 3.0,
                "buckets": [[0.001, 1], [0.01, 3], [0.1, 4], [None, 5]],
            },
        },
        "put": {"by_status": {"503": 1}, "latency": {"count": 0, "sum": 0.0, "buckets": []}},
    }
    assert found["sweepers"] == {"s0": {"deleted_rows": 42.0, "stale_ratio": 0.125}}


def replica(in_rotation: bool, problem: str | None = None) -> ReplicaStatus:
    return ReplicaStatus("s0/replica1", True, in_rotation, 0.25 if in_rotation else None, problem)


def test_readiness_is_down_with_a_primary_down_and_degraded_with_a_replica_out() -> None:
    assert Readiness({"s0": None, "s1": None}, [replica(True)], 3, "stable").state == "ready"
    degraded = Readiness({"s0": None}, [replica(False, "lag 9.0 s > 5 s")], 3, "stable")
    assert degraded.state == "degraded" and degraded.down == []
    down = Readiness({"s0": None, "s1": "shard s1: primary: cannot connect"}, [replica(True)], 3, "stable")
    assert down.state == "down" and down.down == ["s1"]


def test_a_replica_summary_is_one_line() -> None:
    assert replica(True).summary() == "up (lag 0.250 s)"
    assert replica(False, "probe failed: timed out").summary() == "out of rotation: probe failed: timed out"
