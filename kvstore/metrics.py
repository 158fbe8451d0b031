"""Prometheus metrics: ``kvstore_`` prefix, base units, bounded labels (never a key).

With ``--workers N`` the server sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start,
and ``/metrics`` aggregates every worker's samples (prometheus_client's multiprocess mode).
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("kvstore_http_requests", "HTTP requests by operation and status", ["op", "status"])
HTTP_LATENCY = Histogram(
    "kvstore_http_request_duration_seconds", "HTTP request latency", ["op"], buckets=_LATENCY_BUCKETS
)
SHARD_QUERY_LATENCY = Histogram(
    "kvstore_shard_query_duration_seconds",
    "Database round trips per shard and operation",
    ["shard", "op"],
    buckets=_LATENCY_BUCKETS,
)
SHARD_ERRORS = Counter("kvstore_shard_errors", "Failed shard operations by kind", ["shard", "kind"])
POOL_IN_USE = Gauge(
    "kvstore_pool_connections_in_use",
    "Connections checked out of a node's pool",
    ["shard", "node"],
    multiprocess_mode="livesum",
)
SHARD_UP = Gauge(
    "kvstore_shard_up",
    "1 when the shard primary answered the last readiness probe",
    ["shard"],
    multiprocess_mode="livemax",
)


def exposition() -> bytes:
    """The text exposition of every metric, aggregated over workers when there are several."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
