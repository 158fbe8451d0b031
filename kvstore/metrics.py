"""Prometheus metrics: ``kvstore_`` prefix, base units, bounded labels (never a key).

With ``--workers N`` the server sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start,
and ``/metrics`` aggregates every worker's samples (prometheus_client's multiprocess mode).
"""

import functools
import os
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric, generate_latest
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
BATCH_KEYS = Histogram(
    "kvstore_batch_keys",
    "Keys per statement a node's read or write lane sent (natural batching)",
    ["node", "lane"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SHED_REQUESTS = Counter("kvstore_http_shed_requests", "Requests refused with 503 because the worker was full")
SHARD_ERRORS = Counter("kvstore_shard_errors", "Failed shard operations by kind", ["shard", "kind"])
RING_REFUSALS = Counter(
    "kvstore_ring_refusals", "Statements a shard refused as routed by another ring epoch (then routed again)", ["shard"]
)
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


READS = Counter("kvstore_reads", "GETs by the node that served them", ["shard", "target"])
READ_FALLBACKS = Counter(
    "kvstore_read_fallbacks", "GETs that went to the primary although the shard has replicas", ["shard", "reason"]
)
REPLICA_LAG = Gauge(
    "kvstore_replica_lag_seconds",
    "Replica lag measured by the probe",
    ["shard", "replica"],
    multiprocess_mode="livemax",
)
REPLICA_IN_ROTATION = Gauge(
    "kvstore_replica_in_rotation",
    "1 while the replica serves reads",
    ["shard", "replica"],
    multiprocess_mode="livemin",
)
SWEEPER_SAMPLED = Counter("kvstore_sweeper_sampled_keys", "Keys the sweeper sampled", ["shard"])
SWEEPER_DEAD = Counter("kvstore_sweeper_dead_keys", "Sampled keys that were expired or deleted", ["shard"])
SWEEPER_DELETED = Counter("kvstore_sweeper_deleted_rows", "Rows the sweeper hard-deleted", ["shard"])
SWEEPER_CYCLES = Counter("kvstore_sweeper_cycles", "Sweep cycles run", ["shard"])
SWEEPER_SECONDS = Counter("kvstore_sweeper_seconds", "Time spent in sweep cycles", ["shard"])
SWEEPER_STALE = Gauge(
    "kvstore_sweeper_stale_ratio",
    "Running estimate of the dead fraction among rows with an expiry (Redis: expired_stale_perc)",
    ["shard"],
    multiprocess_mode="livemax",
)
SWEEPER_ACTIVE = Gauge(
    "kvstore_sweeper_active",
    "1 while this process holds the shard's sweeper lock",
    ["shard"],
    multiprocess_mode="livemax",
)
RING_EPOCH = Gauge(
    "kvstore_ring_epoch",
    "Epoch of the ring record this front end routes by (0: none read yet)",
    multiprocess_mode="livemax",
)
RING_PHASE = Gauge(
    "kvstore_ring_phase",
    "1 for the phase of the ring record this front end routes by (a migration's progress), else 0",
    ["phase"],
    multiprocess_mode="livemax",
)


@functools.cache
def _request_children(op: str, status: int) -> tuple[Counter, Histogram]:
    """The labelled children for one (op, status): ``labels()`` takes a lock and builds a key each call."""
    return HTTP_REQUESTS.labels(op, str(status)), HTTP_LATENCY.labels(op)


def record_request(op: str, status: int, seconds: float) -> None:
    """Count one HTTP request and observe its latency; ``op`` and ``status`` are bounded, so is the cache."""
    counter, latency = _request_children(op, status)
    counter.inc()
    latency.observe(seconds)


@functools.cache
def _shard_query_child(shard: str, op: str) -> Histogram:
    return SHARD_QUERY_LATENCY.labels(shard, op)


def record_shard_query(shard: str, op: str, seconds: float) -> None:
    """Observe one operation's time on a shard (shards and ops are bounded, so is the cache)."""
    _shard_query_child(shard, op).observe(seconds)


@functools.cache
def _read_child(shard: str, target: str) -> Counter:
    return READS.labels(shard, target)


def count_read(shard: str, target: str) -> None:
    _read_child(shard, target).inc()


def record_ring(epoch: int, phase: str, phases: Iterable[str]) -> None:
    """The ring record in force: its epoch, and which of ``phases`` it is in."""
    RING_EPOCH.set(epoch)
    for name in phases:
        RING_PHASE.labels(name).set(1 if name == phase else 0)


def record_sweep(shard: str, result: "SweepCounts", seconds: float, stale_estimate: float) -> None:
    SWEEPER_SAMPLED.labels(shard).inc(result.sampled)
    SWEEPER_DEAD.labels(shard).inc(result.dead)
    SWEEPER_DELETED.labels(shard).inc(result.deleted)
    SWEEPER_CYCLES.labels(shard).inc()
    SWEEPER_SECONDS.labels(shard).inc(seconds)
    SWEEPER_STALE.labels(shard).set(stale_estimate)


class SweepCounts(Protocol):
    sampled: int
    dead: int
    deleted: int


def _registry() -> CollectorRegistry:
    """This process's metrics, or every worker's when there are several."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition() -> bytes:
    """The text exposition of every metric, aggregated over workers when there are several."""
    return generate_latest(_registry())


def collect() -> Iterable[Metric]:
    """Every metric family with its samples, aggregated as ``exposition`` is (for ``/v1/status``)."""
    return _registry().collect()
