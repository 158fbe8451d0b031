"""The cluster's state as a front end sees it: one module behind ``/readyz``, ``GET /v1/status``
(the console's cluster page) and ``kvstore shards status``.

Each asks at its own price::

    readiness()       every primary pinged, replicas as their probe last saw them    /readyz (load balancers)
    cluster_status()  + ring shares, schema, row counts and sweeper backlog (dead      /v1/status,
                        rows, from random samples), the migration's copy progress      shards status
    server_metrics()  the server's own counters: sweeper reclaim, requests and their   /v1/status
                        latency histograms per op (no I/O)

Metrics are cumulative, as Prometheus exports them: a reader computes rates from two answers, as
``rate()`` does, so the server keeps no window and every worker answers alike.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import Metric

from kvstore import metrics
from kvstore.backends.base import TableStats
from kvstore.errors import KvError
from kvstore.replicas import ReplicaHealth
from kvstore.reshard.migration import SourceStatus, copy_status
from kvstore.ring_record import RingRecord
from kvstore.router import Router
from kvstore.shard import Shard

PROBE_TIMEOUT_S = 1.0  # a readiness ping: load balancers ask often and want a quick answer
SAMPLES = 5
SAMPLE_SIZE = 100


async def primary_problem(shard: Shard, timeout_s: float) -> str | None:
    """None when the shard's primary opens (if it was not) and answers a ping within ``timeout_s``; else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            await shard.open()
            await shard.primary.ping()
    except TimeoutError:
        return f"shard {shard.name}: primary: no answer within {timeout_s:g} s"
    except KvError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica as its shard's probe last saw it; ``reachable`` is None when it could not be
    probed (the primary, whose position lag is judged against, did not answer)."""

    node: str
    reachable: bool | None
    in_rotation: bool
    lag_s: float | None
    problem: str | None

    @classmethod
    def of(cls, health: ReplicaHealth, probed: bool) -> "ReplicaStatus":
        if not probed:
            unprobed = "not probed: the primary did not answer"
            return cls(health.node.label, None, health.in_rotation, health.lag_s, unprobed)
        reachable = health.opened and not (health.problem or "").startswith("probe failed")
        return cls(health.node.label, reachable, health.in_rotation, health.lag_s, health.problem)

    def summary(self) -> str:
        """One line, as ``/readyz`` gives it."""
        if self.in_rotation:
            return f"up (lag {self.lag_s or 0:.3f} s)"
        return f"out of rotation: {self.problem}"

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "reachable": self.reachable,
            "in_rotation": self.in_rotation,
            "lag_s": self.lag_s,
            "problem": self.problem,
        }


def replica_statuses(shard: Shard, probed: bool = True) -> list[ReplicaStatus]:
    return [] if shard.replicas is None else [ReplicaStatus.of(health, probed) for health in shard.replicas.replicas]


@dataclass(frozen=True)
class Readiness:
    """Whether this front end can serve: every primary answers. Replicas out of rotation cost
    capacity, not correctness: then it is ready but ``degraded``."""

    shards: dict[str, str | None]  # shard -> None when its primary answered, else why not
    replicas: list[ReplicaStatus]
    epoch: int
    phase: str

    @property
    def down(self) -> list[str]:
        return [name for name, problem in self.shards.items() if problem is not None]

    @property
    def state(self) -> str:
        if self.down:
            return "down"
        return "degraded" if any(not replica.in_rotation for replica in self.replicas) else "ready"


async def readiness(router: Router) -> Readiness:
    """Ping every primary at once (``kvstore_shard_up`` follows); replicas as their probe left them."""
    names = sorted(router.shards)
    problems = await asyncio.gather(*(primary_problem(router.shards[name], PROBE_TIMEOUT_S) for name in names))
    for name, problem in zip(names, problems, strict=True):
        metrics.SHARD_UP.labels(name).set(0 if problem else 1)
    replicas = [replica for name in names for replica in replica_statuses(router.shards[name])]
    topology = router.topology
    return Readiness(dict(zip(names, problems, strict=True)), replicas, topology.epoch, topology.phase.value)


@dataclass(frozen=True)
class RowCounts:
    """A shard's rows, each count with how it was obtained: "exact", "estimate" or "sample".

    ``dead`` (expired or soft-deleted, not yet reclaimed) is the sweeper's backlog.
    """

    total: int | None
    with_expiry: int | None
    dead: int | None
    methods: dict[str, str]
    sampled: int
    sampled_dead: int

    @property
    def live(self) -> int | None:
        return None if self.total is None or self.dead is None else max(self.total - self.dead, 0)

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "live": self.live,
            "dead": self.dead,
            "with_expiry": self.with_expiry,
            "methods": self.methods,
            "sample": {"rows": self.sampled, "dead": self.sampled_dead},
        }


def count_rows(stats: TableStats, samples: list[list[tuple[str, bool]]], sample_size: int) -> RowCounts:
    """Counts from the table's statistics and random samples of the rows with an expiry.

    A sample that comes back short holds every row with an expiry, so then the dead rows are
    counted; otherwise the sampled dead fraction is scaled to the rows with an expiry.
    """
    seen = {key: dead for sample in samples for key, dead in sample}
    sampled, sampled_dead = len(seen), sum(seen.values())
    engine = "exact" if stats.exact else "estimate"
    with_expiry: int | None
    dead: int | None
    if any(len(sample) < sample_size for sample in samples):
        with_expiry, dead, methods = sampled, sampled_dead, {"with_expiry": "exact", "dead": "exact"}
    else:
        with_expiry, methods = stats.expiring, {"with_expiry": engine, "dead": "sample"}
        dead = None if with_expiry is None else round(with_expiry * sampled_dead / sampled)
    live = "exact" if stats.exact and methods["dead"] == "exact" else "estimate"
    return RowCounts(stats.rows, with_expiry, dead, {"total": engine, "live": live, **methods}, sampled, sampled_dead)


@dataclass(frozen=True)
class TableCounts:
    """What a shard's table holds, counted at ``counted_at`` (Unix time); ``error`` when the primary
    answered but not with statistics (no schema, no answer in time)."""

    counted_at: float
    schema_version: int | None = None
    rows: RowCounts | None = None
    error: str | None = None


async def count_table(shard: Shard, timeout_s: float) -> TableCounts:
    """The table's statistics and ``SAMPLES`` random samples of its rows with an expiry."""
    counted_at = time.time()
    try:
        async with asyncio.timeout(timeout_s):
            stats = await shard.primary.table_stats()
            samples = [await shard.primary.sample_expiring(SAMPLE_SIZE) for _ in range(SAMPLES)]
    except KvError as error:
        return TableCounts(counted_at, error=str(error))
    except TimeoutError:
        return TableCounts(counted_at, error=f"shard {shard.name}: primary: no answer within {timeout_s:g} s")
    return TableCounts(counted_at, stats.schema_version, count_rows(stats, samples, SAMPLE_SIZE))


class RecentCounts:
    """``count_table`` at most once per ``max_age_s`` per shard, however many ask, for a server.

    Counting is not free: SQLite counts every row, the others up to 100,000 (beyond, the engine's
    estimate), on the connection foreground reads use; a console polling every 2 s must not cost
    a scan each time. A failed count is not kept, so a shard that comes back is counted at once.
    """

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._counted: dict[str, TableCounts] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __call__(self, shard: Shard, timeout_s: float) -> TableCounts:
        async with self._locks.setdefault(shard.name, asyncio.Lock()):
            found = self._counted.get(shard.name)
            if found is None or time.time() - found.counted_at >= self.max_age_s:
                found = await count_table(shard, timeout_s)
                if found.error is None:
                    self._counted[shard.name] = found
            return found


CountTable = Callable[[Shard, float], Awaitable[TableCounts]]


@dataclass
class ShardStatus:
    name: str
    backend: str
    weight: int
    share: float
    primary_error: str | None = None
    counts: TableCounts | None = None  # None when the primary did not answer
    replicas: list[ReplicaStatus] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return None if self.counts is None else self.counts.error

    @property
    def schema_version(self) -> int | None:
        return None if self.counts is None else self.counts.schema_version

    @property
    def rows(self) -> RowCounts | None:
        return None if self.counts is None else self.counts.rows

    @property
    def ok(self) -> bool:
        return self.primary_error is None and self.error is None

    def to_json(self) -> dict[str, object]:
        counted_at = None if self.rows is None or self.counts is None else round(self.counts.counted_at * 1000)
        return {
            "name": self.name,
            "backend": self.backend,
            "weight": self.weight,
            "share": self.share,
            "ok": self.ok,
            "primary": {"reachable": self.primary_error is None, "error": self.primary_error},
            "replicas": [replica.to_json() for replica in self.replicas],
            "schema_version": self.schema_version,
            "rows": None if self.rows is None else self.rows.to_json(),
            "counted_at": counted_at,
            "error": self.error,
        }


async def shard_status(
    shard: Shard, weight: int, share: float, timeout_s: float, probe_replicas: bool, count: CountTable = count_table
) -> ShardStatus:
    """Reachability, schema and rows of one shard (counted by ``count``); its replicas probed now
    when ``probe_replicas`` (a process without the background probe), else as the probe last saw them."""
    result = ShardStatus(shard.name, shard.backend, weight, share)
    result.primary_error = await primary_problem(shard, timeout_s)
    if result.primary_error is None:
        result.counts = await count(shard, timeout_s)
    if shard.replicas is not None and probe_replicas:
        await shard.replicas.probe()  # needs the primary's position: without it nothing is probed
    result.replicas = replica_statuses(shard, probed=result.primary_error is None)
    return result


@dataclass(frozen=True)
class MigrationStatus:
    """A reshard in progress: its phase and, per source shard, the copier's progress."""

    migration: str | None
    phase: str
    changed_at: float
    sources: list[SourceStatus]
    error: str | None = None  # the copier's cursors could not be read

    def to_json(self) -> dict[str, object]:
        return {
            "migration": self.migration,
            "phase": self.phase,
            "changed_at": self.changed_at,
            "sources": [
                {
                    "shard": source.shard,
                    "scanned": source.scanned,
                    "copied": source.copied,
                    "done": source.done,
                    "rows_estimate": source.rows_estimate,
                    "rate_per_s": source.rate_per_s,
                    "eta_s": source.eta_s,
                }
                for source in self.sources
            ],
            "error": self.error,
        }


async def migration_status(
    shards: Mapping[str, Shard], record: RingRecord, timeout_s: float, count: CountTable = count_table
) -> MigrationStatus | None:
    """None on a stable ring; else the phase and the copy's progress as the source shards record it,
    each source sized by ``count``."""
    if record.previous is None:
        return None

    async def source_rows(shard: Shard) -> int | None:
        rows = (await count(shard, timeout_s)).rows
        return None if rows is None else rows.total

    sources: list[SourceStatus] = []
    error = None
    try:
        async with asyncio.timeout(timeout_s):
            sources = await copy_status(shards, record, source_rows)
    except KvError as failure:
        error = str(failure)
    except TimeoutError:
        error = f"no answer within {timeout_s:g} s"
    return MigrationStatus(record.migration, record.phase.value, record.changed_at, sources, error)


@dataclass(frozen=True)
class ClusterStatus:
    record: RingRecord
    shards: list[ShardStatus]
    migration: MigrationStatus | None

    @property
    def ok(self) -> bool:
        return all(shard.ok for shard in self.shards)

    def to_json(self) -> dict[str, object]:
        record = self.record
        return {
            "ok": self.ok,
            "ring": {
                "epoch": record.epoch,
                "phase": record.phase.value,
                "vnodes_per_weight": record.vnodes_per_weight,
            },
            "shards": [shard.to_json() for shard in self.shards],
            "migration": None if self.migration is None else self.migration.to_json(),
        }


async def cluster_status(
    shards: Mapping[str, Shard],
    record: RingRecord,
    timeout_s: float,
    probe_replicas: bool,
    count: CountTable = count_table,
) -> ClusterStatus:
    """Every shard of ``record``'s ring (then the others in ``shards``), each within ``timeout_s``."""
    ring = record.ring()
    weights, shares = {node.name: node.weight for node in ring.nodes}, ring.shares()
    # The ring in force first (it may name shards the config lacks), then known shards outside it.
    names = [name for name in dict.fromkeys([*ring.names, *record.shard_names(), *shards]) if name in shards]
    by_shard = (
        shard_status(shards[name], weights.get(name, 0), shares.get(name, 0.0), timeout_s, probe_replicas, count)
        for name in names
    )
    migration = migration_status(shards, record, timeout_s, count)
    statuses, moving = await asyncio.gather(asyncio.gather(*by_shard), migration)
    return ClusterStatus(record, list(statuses), moving)


@dataclass
class OpTraffic:
    """One op's requests by status and its latency histogram, cumulative since the server started."""

    by_status: dict[str, int] = field(default_factory=dict)
    count: int = 0
    sum_s: float = 0.0
    buckets: list[tuple[float | None, int]] = field(default_factory=list)  # (upper bound or None for +Inf, count)

    def to_json(self) -> dict[str, object]:
        latency = {"count": self.count, "sum": self.sum_s, "buckets": [list(bucket) for bucket in self.buckets]}
        return {"by_status": self.by_status, "latency": latency}


_LATENCY = "kvstore_http_request_duration_seconds"
_SWEEPER_SAMPLES = {
    "kvstore_sweeper_deleted_rows_total": "deleted_rows",
    "kvstore_sweeper_cycles_total": "cycles",
    "kvstore_sweeper_stale_ratio": "stale_ratio",
    "kvstore_sweeper_active": "active",
}


def server_metrics(families: Iterable[Metric] | None = None) -> dict[str, object]:
    """This server's counters (``metrics.collect()`` unless ``families`` are given), cumulative: per
    op, requests by status and the latency histogram (``buckets``: ``[upper bound, cumulative count]``,
    the last bound ``null`` for +Inf); per shard the sweeper's reclaim and its running estimate of the
    dead fraction. ``at`` (Unix ms) dates them.
    """
    requests: defaultdict[str, OpTraffic] = defaultdict(OpTraffic)
    sweepers: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for family in metrics.collect() if families is None else families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "kvstore_http_requests_total":
                by_status = requests[labels["op"]].by_status
                by_status[labels["status"]] = by_status.get(labels["status"], 0) + int(value)
            elif name == _LATENCY + "_bucket":
                bound = float(labels["le"])
                requests[labels["op"]].buckets.append((None if bound == float("inf") else bound, int(value)))
            elif name == _LATENCY + "_count":
                requests[labels["op"]].count = int(value)
            elif name == _LATENCY + "_sum":
                requests[labels["op"]].sum_s = value
            elif name in _SWEEPER_SAMPLES:
                sweepers[labels["shard"]][_SWEEPER_SAMPLES[name]] = value
    return {
        "at": int(time.time() * 1000),
        "requests": {op: traffic.to_json() for op, traffic in sorted(requests.items())},
        "sweepers": dict(sweepers),
    }
