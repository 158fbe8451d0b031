"""What the expiry sweeper costs, on SQLite, PostgreSQL and MariaDB: four questions, answered with figures.

The sweeper (``kvstore/sweeper.py``) samples K = 20 rows at a random point of the ``store_sweep_slot``
index and purges the dead ones. This benchmark checks the claims that design rests on.

Section 1, sampling cost vs table size. The table is bulk-loaded as PUTs would leave it: half the
rows with an expiry (far in the future, so all live) and a random 62-bit ``sweep_slot``, half
persistent (slot NULL). At ``--rows``/10 and then ``--rows`` rows (the rest loaded into the same
table) it times 500 ``node.sample_expiring(20)`` calls and 500 ``node.purge`` calls on 20 live keys
(nothing is deleted: this is the cost of the DELETE's re-check), one call at a time, after 50 untimed
warm-up calls. The claim: O(log n + K), so the cost at 1M rows is within ±50 % of the cost at 100k.
It also shows each engine's plan for the sampling query and, on MariaDB, the InnoDB buffer-pool
misses per call (a table larger than the engine's cache costs disk reads whatever the algorithm).

Section 2, sampling bias. 10,000 rows with an expiry, all live; 20,000 ``sample_expiring(20)`` calls
(400,000 draws, 40 expected per key). The scheme returns the K rows after a uniformly random point,
so a row is returned when the point falls in the window between its K-th predecessor's slot and its
own: its chance is proportional to that window (a sum of K gaps), not uniform. Reported: spread of
the per-key counts, keys never sampled, a chi-square statistic against uniform and against that gap
model (computed from the slots the benchmark assigned), then the same after every row is given a
fresh slot, and the counts of both runs summed.

Section 3, index cost on PUT throughput. On the table section 1 left (``--rows`` rows), unconditional
PUTs through ``Node.put`` with a TTL (which maintain the index) and without (persistent),
on fresh keys (inserts) and on existing keys of the same kind (overwrites); 16 concurrent tasks,
20,000 ops or 15 s per case, with the ``store_sweep_slot`` index and with it dropped. Each case runs
as two half legs in the order with, without, without, with, so that drift (a growing table, cache
warm-up, checkpoints, vacuum) falls on both sides alike; the legs are pooled.

Section 4, reclaim rate and foreground impact. 200,000 rows, 100,000 of them already expired and
100,000 live with an expiry; 16 tasks doing ``node.get`` on random live keys for 10 s without the
sweeper (5 s before and 5 s after, so that drift cancels out) and for 10 s in between with a
``ShardSweeper`` (default ``SweeperSettings``) running in the same event loop, sharing the node's pool
as it does in the server; then the sweeper alone for 5 s. Reported: GET ops/s and p50/p99 with and
without, and the rows the sweeper deleted per second under load and alone (dead rows counted with SQL
before and after; cycles and batches from kvstore's sweeper metrics).

PostgreSQL and MariaDB are temporary servers on free ports (``kvstore.cluster``), SQLite a temporary
file; all are removed at the end. ``--no-durable`` turns fsync off on the servers; SQLite always runs
with kvstore's own ``synchronous=FULL``. After each bulk load the servers' statistics are refreshed
(``ANALYZE``), as autovacuum / InnoDB would do on their own.

Run from the repository root (the whole default run takes 3 to 5 minutes on 2 cores)::

    .venv/bin/python -m benchmarks.sweeper_costs [--rows 1000000] [--backends sqlite,postgres,mysql]
        [--durable/--no-durable] [--json OUT]
"""

import asyncio
import json
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomysql
import asyncpg
import click
import uvloop
from prometheus_client import REGISTRY

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends import mysql as mysql_backend
from kvstore.backends import postgres as postgres_backend
from kvstore.backends import sqlite as sqlite_backend
from kvstore.backends.base import PERSISTENT_TTL
from kvstore.backends.sql import PURGE, SAMPLE, SLOT_SPACE, Dialect
from kvstore.cluster import MariaDBInstance, PostgresInstance
from kvstore.config import SweeperSettings
from kvstore.errors import describe
from kvstore.sweeper import ShardSweeper
from tests.support.rawdb import insert_rows

BACKENDS = ("sqlite", "postgres", "mysql")
ENGINE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB"}
DIALECTS: dict[str, Dialect] = {
    "sqlite": sqlite_backend.DIALECT,
    "postgres": postgres_backend.DIALECT,
    "mysql": mysql_backend.DIALECT,
}
SHARD = "bench"
POOL = PoolSettings(min_size=1, max_size=16, connect_timeout_s=5, statement_timeout_s=30)
VALUE = os.urandom(100)
K = SweeperSettings().keys_per_sample  # 20, the sweeper's batch
LOAD_CHUNK = 100_000
HOUR_MS = 3_600_000
FUTURE_MS = 10 * 365 * 24 * HOUR_MS  # "far in the future": ten years

# Section 1
SAMPLE_CALLS = 500
PURGE_CALLS = 500
WARMUP_CALLS = 50
FLAT_TOLERANCE = 0.5  # target: cost at the large size within ±50 % of the small one

# Section 2
BIAS_ROWS = 10_000
BIAS_CALLS = 20_000
BIAS_CONCURRENCY = 8

# Section 3
CONCURRENCY = 16
PUT_OPS = 20_000
PUT_LIMIT_S = 15.0
PUT_TTL_MS = HOUR_MS
ABBA = (True, False, False, True)  # legs: with the index, without, without, with

# Section 4
RECLAIM_EXPIRED = 100_000
RECLAIM_LIVE = 100_000
GET_SECONDS = 10.0
GET_DROP_TARGET = 0.10
SWEEPER_ALONE_S = 5.0

TRUNCATE = {"sqlite": "DELETE FROM store", "postgres": "TRUNCATE store", "mysql": "TRUNCATE TABLE store"}
DROP_INDEX = {
    "sqlite": "DROP INDEX store_sweep_slot",
    "postgres": "DROP INDEX store_sweep_slot",
    "mysql": "ALTER TABLE store DROP INDEX store_sweep_slot",
}
CREATE_INDEX = {
    "sqlite": sqlite_backend.DIALECT.indexes[0],
    "postgres": postgres_backend.DIALECT.indexes[0],
    "mysql": "ALTER TABLE store ADD INDEX store_sweep_slot (sweep_slot)",
}
ANALYZE = {"postgres": "ANALYZE store", "mysql": "ANALYZE TABLE store"}  # SQLite: kvstore never analyzes
EXPLAIN = {"sqlite": "EXPLAIN QUERY PLAN ", "postgres": "EXPLAIN ", "mysql": "EXPLAIN "}
SERVER_VERSION = {"sqlite": "SELECT sqlite_version()", "postgres": "SHOW server_version", "mysql": "SELECT VERSION()"}
CACHE_SIZE = {  # the engine's own page cache
    "sqlite": "SELECT 'cache_size ' || cache_size FROM pragma_cache_size()",
    "postgres": "SELECT 'shared_buffers ' || current_setting('shared_buffers')",
    "mysql": "SELECT CONCAT('innodb_buffer_pool_size ', @@innodb_buffer_pool_size DIV 1048576, 'MB')",
}
COUNT_DEAD = "SELECT COUNT(*) FROM store WHERE ttl <= ?"

Row = tuple[str, bytes, int, int, int | None]
T = TypeVar("T")
Operation = Callable[[random.Random], Awaitable[str | None]]
"""One timed operation of a load; returns an outcome to count, or None."""


def progress(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


# -- the databases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One database under test: where it is, and a kvstore node open on it."""

    backend: str
    location: str
    node: Node

    @property
    def name(self) -> str:
        return ENGINE_NAMES[self.backend]

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.backend]


async def execute(target: Target, template: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection: ``{key}``/``{now_ms}`` fragments and ``?`` placeholders."""
    sql = target.dialect.render(template)
    if target.backend == "sqlite":
        with closing(sqlite3.connect(target.location, isolation_level=None)) as connection:
            return [tuple(row) for row in connection.execute(sql, params).fetchall()]
    if target.backend == "postgres":
        pg = await asyncpg.connect(target.location)
        try:
            return [tuple(row) for row in await pg.fetch(sql, *params)]
        finally:
            await pg.close()
    my = await aiomysql.connect(autocommit=True, **mysql_backend.connect_arguments(target.location))
    try:
        async with my.cursor() as cursor:
            await cursor.execute(sql, params or None)
            return [tuple(row) for row in await cursor.fetchall()]
    finally:
        my.close()


async def open_target(backend: str, location: str) -> Target:
    node = create_node(backend, SHARD, "primary", location, POOL)
    await node.open()
    await node.ensure_schema()
    return Target(backend, location, node)


async def reset(target: Target) -> None:
    """Empty the table and make sure the sweep-slot index exists."""
    await execute(target, TRUNCATE[target.backend])
    if not await has_index(target):
        await execute(target, CREATE_INDEX[target.backend])


async def has_index(target: Target) -> bool:
    if target.backend == "sqlite":
        found = await execute(target, "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'store_sweep_slot'")
    elif target.backend == "postgres":
        found = await execute(target, "SELECT 1 FROM pg_indexes WHERE indexname = 'store_sweep_slot'")
    else:
        found = await execute(target, "SHOW INDEX FROM store WHERE Key_name = 'store_sweep_slot'")
    return bool(found)


async def analyze(target: Target) -> None:
    if target.backend in ANALYZE:
        await execute(target, ANALYZE[target.backend])


async def sample_plan(target: Target) -> str:
    """How the engine runs the sampling query: it must be a range read of the sweep-slot index."""
    rows = await execute(target, EXPLAIN[target.backend] + SAMPLE, random.randrange(SLOT_SPACE), K)
    if target.backend == "sqlite":
        return "; ".join(str(row[-1]) for row in rows)
    if target.backend == "postgres":
        return "; ".join(str(row[0]).strip().split("  (")[0].lstrip("-> ") for row in rows)
    return "; ".join(f"{row[3]} on {row[5]}" for row in rows)  # access type, index used


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def key_name(index: int) -> str:
    return f"k{index:09d}"


def mixed_rows(start: int, stop: int, base_ms: int) -> Iterator[Row]:
    """Even indices: expiring far in the future, with a slot; odd: persistent, no slot."""
    version = base_ms * 1000
    for index in range(start, stop):
        if index % 2 == 0:
            yield key_name(index), VALUE, base_ms + FUTURE_MS, version, random.randrange(SLOT_SPACE)
        else:
            yield key_name(index), VALUE, PERSISTENT_TTL, version, None


def half_expired_rows(start: int, stop: int, base_ms: int) -> Iterator[Row]:
    """Even indices: expired an hour ago; odd: live, expiring far in the future. All have a slot."""
    version = base_ms * 1000
    for index in range(start, stop):
        ttl = base_ms - HOUR_MS if index % 2 == 0 else base_ms + FUTURE_MS
        yield key_name(index), VALUE, ttl, version, random.randrange(SLOT_SPACE)


async def load(target: Target, rows: Iterator[Row]) -> None:
    """Bulk-load in chunks, then refresh the planner statistics."""
    while chunk := [row for _, row in zip(range(LOAD_CHUNK), rows, strict=False)]:
        await insert_rows(target.backend, target.location, chunk)
    await analyze(target)


# -- timing --------------------------------------------------------------------------------------


def percentile_ms(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ascending seconds, in milliseconds (NaN when empty)."""
    if not ordered:
        return math.nan
    return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class Latency:
    calls: int
    mean_ms: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ordered = sorted(seconds)
        return cls(
            calls=len(ordered),
            mean_ms=round(1000 * statistics.fmean(ordered), 4) if ordered else math.nan,
            p50_ms=round(percentile_ms(ordered, 0.50), 4),
            p99_ms=round(percentile_ms(ordered, 0.99), 4),
        )


async def time_calls(calls: int, call: Callable[[], Awaitable[Any]]) -> Latency:
    """``calls`` calls one after another, after untimed warm-up calls."""
    for _ in range(WARMUP_CALLS):
        await call()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return Latency.of(seconds)


@dataclass
class Leg:
    """The raw outcome of one load: operations, their latencies (s), outcomes and errors."""

    ops: int
    elapsed_s: float
    seconds: list[float]
    outcomes: Counter[str]
    errors: list[str]


@dataclass(frozen=True)
class Throughput:
    ops: int
    elapsed_s: float
    per_second: float
    p50_ms: float
    p99_ms: float
    outcomes: dict[str, int]
    errors: int
    first_error: str | None

    @classmethod
    def of(cls, legs: Sequence[Leg]) -> "Throughput":
        """Legs pooled: total ops over total time, percentiles over every latency."""
        ops = sum(leg.ops for leg in legs)
        elapsed = sum(leg.elapsed_s for leg in legs)
        seconds = sorted(second for leg in legs for second in leg.seconds)
        errors = [error for leg in legs for error in leg.errors]
        return cls(
            ops=ops,
            elapsed_s=round(elapsed, 3),
            per_second=round(ops / elapsed, 1),
            p50_ms=round(percentile_ms(seconds, 0.50), 3),
            p99_ms=round(percentile_ms(seconds, 0.99), 3),
            outcomes=dict(sum((leg.outcomes for leg in legs), Counter[str]())),
            errors=len(errors),
            first_error=errors[0] if errors else None,
        )


async def drive(operation: Operation, concurrency: int, ops: float, time_limit_s: float) -> Leg:
    """``concurrency`` tasks running ``operation`` until ``ops`` have started or ``time_limit_s`` passed."""
    leg = Leg(ops=0, elapsed_s=0.0, seconds=[], outcomes=Counter(), errors=[])
    deadline = time.perf_counter() + time_limit_s

    async def worker() -> None:
        rng = random.Random()  # seeded from the OS: every leg draws different keys
        while leg.ops < ops and time.perf_counter() < deadline:
            leg.ops += 1
            started = time.perf_counter()
            try:
                outcome = await operation(rng)
            except Exception as error:
                leg.errors.append(describe(error))
                continue
            leg.seconds.append(time.perf_counter() - started)
            if outcome is not None:
                leg.outcomes[outcome] += 1

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    leg.elapsed_s = time.perf_counter() - began
    return leg


# -- section 1: sampling cost vs table size ------------------------------------------------------


@dataclass(frozen=True)
class SizePoint:
    rows: int
    load_s: float
    sample: Latency
    purge: Latency
    plan: str
    disk_reads_per_call: float | None  # MariaDB: InnoDB buffer pool misses (pages read) per timed call


async def measure_size(target: Target, rows: int, load_s: float) -> SizePoint:
    expiring = rows // 2  # even indices below ``rows``

    async def purge_live() -> None:
        keys = [key_name(2 * random.randrange(expiring)) for _ in range(K)]
        if await target.node.purge(keys):
            raise RuntimeError("purge deleted a live row")

    reads_before = await disk_reads(target)
    sample = await time_calls(SAMPLE_CALLS, lambda: target.node.sample_expiring(K))
    purge = await time_calls(PURGE_CALLS, purge_live)
    reads_after = await disk_reads(target)
    per_call = None
    if reads_before is not None and reads_after is not None:
        per_call = round((reads_after - reads_before) / (WARMUP_CALLS * 2 + SAMPLE_CALLS + PURGE_CALLS), 2)
    return SizePoint(rows, round(load_s, 1), sample, purge, await sample_plan(target), per_call)


async def disk_reads(target: Target) -> int | None:
    """MariaDB's count of pages read from disk into the buffer pool (None on other engines)."""
    if target.backend != "mysql":
        return None
    [(_, value)] = await execute(target, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_reads'")
    return int(value)


async def sampling_cost(target: Target, sizes: Sequence[int]) -> list[SizePoint]:
    await reset(target)
    points = []
    loaded = 0
    for size in sizes:
        progress(f"{target.name}: loading rows {loaded:,}..{size:,}")
        started = time.perf_counter()
        await load(target, mixed_rows(loaded, size, now_ms()))
        loaded = size
        points.append(await measure_size(target, size, time.perf_counter() - started))
        point = points[-1]
        progress(
            f"{target.name}: {size:,} rows: sample {point.sample.mean_ms:.3f} ms, purge {point.purge.mean_ms:.3f} ms"
        )
    return points


# -- section 2: sampling bias --------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Per-key sample counts against uniform and against the gap model."""

    draws: int
    keys: int
    expected_per_key: float
    min: int
    median: float
    max: int
    cv: float
    cv_if_uniform: float  # binomial noise alone
    cv_gap_model: float  # what the gap model predicts: noise plus the spread of the windows
    never_sampled: int
    chi2_uniform: float
    chi2_gap_model: float
    dof: int
    chi2_per_dof_uniform: float  # about 1 if sampling were uniform
    chi2_per_dof_gap_model: float  # about 1 if the gap model explains the counts
    corr_count_window: float

    @classmethod
    def of(cls, counts: list[int], chances: list[float], calls: int) -> "Spread":
        """``chances[i]``: the gap model's probability that one call returns key ``i``."""
        keys = len(counts)
        draws = sum(counts)
        expected = draws / keys
        model = [calls * chance for chance in chances]
        chi2_uniform = sum((count - expected) ** 2 / expected for count in counts)
        chi2_model = sum((count - e) ** 2 / e for count, e in zip(counts, model, strict=True))
        dof = keys - 1
        window_cv = statistics.pstdev(chances) / statistics.fmean(chances)
        return cls(
            draws=draws,
            keys=keys,
            expected_per_key=round(expected, 2),
            min=min(counts),
            median=statistics.median(counts),
            max=max(counts),
            cv=round(statistics.pstdev(counts) / expected, 4),
            cv_if_uniform=round(math.sqrt((1 - K / keys) / expected), 4),
            cv_gap_model=round(math.sqrt(window_cv**2 + 1 / expected), 4),
            never_sampled=sum(1 for count in counts if count == 0),
            chi2_uniform=round(chi2_uniform, 1),
            chi2_gap_model=round(chi2_model, 1),
            dof=dof,
            chi2_per_dof_uniform=round(chi2_uniform / dof, 3),
            chi2_per_dof_gap_model=round(chi2_model / dof, 3),
            corr_count_window=round(statistics.correlation([float(c) for c in counts], chances), 3),
        )


def window_chances(slots: list[int], batch: int) -> list[float]:
    """Per row, the chance that a uniformly random start returns it among the next ``batch`` rows.

    Row i is returned when the start falls in (slot of its ``batch``-th predecessor, its own slot],
    circularly (sampling wraps around to slot 0).
    """
    order = sorted(range(len(slots)), key=slots.__getitem__)
    ordered = [slots[i] for i in order]
    chances = [0.0] * len(slots)
    for position, row in enumerate(order):
        window = (ordered[position] - ordered[position - batch]) % SLOT_SPACE
        chances[row] = window / SLOT_SPACE
    return chances


@dataclass(frozen=True)
class Bias:
    first: Spread
    redrawn: Spread
    both: Spread
    seconds: float


async def count_samples(target: Target, keys: list[str]) -> list[int]:
    counter: Counter[str] = Counter()
    per_task = BIAS_CALLS // BIAS_CONCURRENCY

    async def worker() -> None:
        for _ in range(per_task):
            counter.update(key for key, _ in await target.node.sample_expiring(K))

    async with asyncio.TaskGroup() as group:
        for _ in range(BIAS_CONCURRENCY):
            group.create_task(worker())
    if set(counter) - set(keys):
        raise RuntimeError("sampled a key that is not in the table")
    return [counter[key] for key in keys]


async def load_with_slots(target: Target, keys: list[str]) -> list[int]:
    await reset(target)
    slots = [random.randrange(SLOT_SPACE) for _ in keys]
    base = now_ms()
    await insert_rows(
        target.backend,
        target.location,
        [(k, VALUE, base + FUTURE_MS, base, s) for k, s in zip(keys, slots, strict=True)],
    )
    await analyze(target)
    return slots


async def sampling_bias(target: Target) -> Bias:
    started = time.perf_counter()
    calls = BIAS_CONCURRENCY * (BIAS_CALLS // BIAS_CONCURRENCY)
    keys = [key_name(index) for index in range(BIAS_ROWS)]
    progress(f"{target.name}: sampling bias, first slots")
    first_chances = window_chances(await load_with_slots(target, keys), K)
    first = await count_samples(target, keys)
    progress(f"{target.name}: sampling bias, re-drawn slots")
    redrawn_chances = window_chances(await load_with_slots(target, keys), K)
    redrawn = await count_samples(target, keys)
    both = [a + b for a, b in zip(first, redrawn, strict=True)]
    both_chances = [a + b for a, b in zip(first_chances, redrawn_chances, strict=True)]
    return Bias(
        first=Spread.of(first, first_chances, calls),
        redrawn=Spread.of(redrawn, redrawn_chances, calls),
        both=Spread.of(both, both_chances, calls),
        seconds=round(time.perf_counter() - started, 1),
    )


# -- section 3: index cost on PUT throughput -----------------------------------------------------


@dataclass(frozen=True)
class PutCase:
    index: bool
    expiry: str  # "ttl" or "persistent"
    keys: str  # "insert" or "overwrite"
    result: Throughput  # both legs pooled


@dataclass(frozen=True)
class IndexCost:
    cases: list[PutCase]
    drop_s: float
    rebuild_s: float


def put_operation(target: Target, rows: int, expiry: str, keys: str) -> Operation:
    ttl_ms = PUT_TTL_MS if expiry == "ttl" else None
    parity = 0 if expiry == "ttl" else 1  # overwrite rows of the same kind: even = expiring, odd = persistent

    async def put(rng: random.Random) -> str:
        key = (
            uuid.UUID(int=rng.getrandbits(128)).hex
            if keys == "insert"
            else key_name(2 * rng.randrange(rows // 2) + parity)
        )
        _, created = await target.node.put(key, VALUE, ttl_ms)
        return "created" if created else "replaced"

    return put


async def index_cost(target: Target, rows: int) -> IndexCost:
    """On the table section 1 left, in the order with, without, without, with (drift cancels out).

    Each leg is half of a case's budget (``PUT_OPS`` ops or ``PUT_LIMIT_S`` seconds); a case's
    figure pools its two legs.
    """
    legs: dict[tuple[bool, str, str], list[Leg]] = {}
    timings = {}
    for index in ABBA:
        if index != await has_index(target):
            started = time.perf_counter()
            await execute(target, (CREATE_INDEX if index else DROP_INDEX)[target.backend])
            timings["rebuild" if index else "drop"] = round(time.perf_counter() - started, 2)
        for keys in ("insert", "overwrite"):
            for expiry in ("ttl", "persistent"):
                operation = put_operation(target, rows, expiry, keys)
                leg = await drive(operation, CONCURRENCY, PUT_OPS / 2, PUT_LIMIT_S / 2)
                legs.setdefault((index, keys, expiry), []).append(leg)
                progress(
                    f"{target.name}: PUT {keys} {expiry} {'with' if index else 'without'} index:"
                    f" {leg.ops} ops in {leg.elapsed_s:.1f} s ({leg.ops / leg.elapsed_s:,.0f}/s)"
                )
    cases = [PutCase(index, expiry, keys, Throughput.of(runs)) for (index, keys, expiry), runs in legs.items()]
    return IndexCost(cases, timings["drop"], timings["rebuild"])


# -- section 4: reclaim rate and foreground impact ------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """What one ``ShardSweeper`` run did: dead rows counted with SQL before and after, and its metrics."""

    seconds: float
    dead_before: int
    dead_after: int
    reclaimed_per_s: float
    stale_estimate: float
    cycles: float
    batches: float
    deleted_by_metrics: float


@dataclass(frozen=True)
class Reclaim:
    without_sweeper: Throughput
    with_sweeper: Throughput
    during_load: Sweep
    alone: Sweep


def sweeper_metric(name: str) -> float:
    return float(REGISTRY.get_sample_value(f"kvstore_sweeper_{name}_total", {"shard": SHARD}) or 0.0)


async def sweep_during(target: Target, expired_before: int, work: Awaitable[T]) -> tuple[T, Sweep]:
    """Run a ``ShardSweeper`` (default settings) for as long as ``work`` takes."""
    [(dead_before,)] = await execute(target, COUNT_DEAD, expired_before)
    sweeper = ShardSweeper(SHARD, target.node, SweeperSettings())
    stop = asyncio.Event()
    metrics_before = {name: sweeper_metric(name) for name in ("cycles", "sampled_keys", "deleted_rows")}
    started = time.perf_counter()
    task = asyncio.create_task(sweeper.run(stop))
    result = await work
    stop.set()
    await task
    seconds = time.perf_counter() - started
    [(dead_after,)] = await execute(target, COUNT_DEAD, expired_before)
    delta = {name: sweeper_metric(name) - before for name, before in metrics_before.items()}
    return result, Sweep(
        seconds=round(seconds, 2),
        dead_before=int(dead_before),
        dead_after=int(dead_after),
        reclaimed_per_s=round((dead_before - dead_after) / seconds, 1),
        stale_estimate=round(sweeper.stale_estimate, 4),
        cycles=delta["cycles"],
        batches=delta["sampled_keys"] / K,
        deleted_by_metrics=delta["deleted_rows"],
    )


async def reclaim(target: Target) -> Reclaim:
    await reset(target)
    progress(f"{target.name}: loading {RECLAIM_EXPIRED + RECLAIM_LIVE:,} rows, half expired")
    base = now_ms()
    await load(target, half_expired_rows(0, RECLAIM_EXPIRED + RECLAIM_LIVE, base))

    async def get(rng: random.Random) -> str:
        row = await target.node.get(key_name(2 * rng.randrange(RECLAIM_LIVE) + 1))
        return "hit" if row is not None else "miss"

    # Without, with, without: the baseline brackets the sweeper's run, so that drift cancels out.
    progress(f"{target.name}: GET load without the sweeper, first half")
    before = await drive(get, CONCURRENCY, math.inf, GET_SECONDS / 2)
    progress(f"{target.name}: GET load with the sweeper")
    with_leg, during_load = await sweep_during(target, base, drive(get, CONCURRENCY, math.inf, GET_SECONDS))
    progress(f"{target.name}: GET load without the sweeper, second half")
    after = await drive(get, CONCURRENCY, math.inf, GET_SECONDS / 2)
    progress(f"{target.name}: the sweeper alone")
    _, alone = await sweep_during(target, base, asyncio.sleep(SWEEPER_ALONE_S))
    return Reclaim(Throughput.of([before, after]), Throughput.of([with_leg]), during_load, alone)


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class BackendReport:
    engine: str
    version: str
    cache: str
    sizes: list[SizePoint] = field(default_factory=list)
    bias: Bias | None = None
    index_cost: IndexCost | None = None
    reclaim: Reclaim | None = None


async def run_backend(backend: str, location: str, rows: int) -> BackendReport:
    target = await open_target(backend, location)
    try:
        [(version,)] = await execute(target, SERVER_VERSION[backend])
        [(cache,)] = await execute(target, CACHE_SIZE[backend])
        report = BackendReport(target.name, str(version), str(cache))
        report.sizes = await sampling_cost(target, (rows // 10, rows))
        report.index_cost = await index_cost(target, rows)  # on the table section 1 left
        report.bias = await sampling_bias(target)
        report.reclaim = await reclaim(target)
        await reset(target)
        return report
    finally:
        await target.node.close(5.0)


async def run(locations: dict[str, str], rows: int) -> list[BackendReport]:
    reports = []
    for backend, location in locations.items():
        progress(f"{ENGINE_NAMES[backend]}: start")
        reports.append(await run_backend(backend, location, rows))
    return reports


# -- markdown ---------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def size_table(reports: list[BackendReport]) -> str:
    rows = [
        [
            r.engine,
            f"{p.rows:,}",
            f"{p.load_s:.1f}",
            f"{p.sample.mean_ms:.3f}",
            f"{p.sample.p50_ms:.3f}",
            f"{p.sample.p99_ms:.3f}",
            f"{p.purge.mean_ms:.3f}",
            f"{p.purge.p50_ms:.3f}",
            f"{p.purge.p99_ms:.3f}",
            "-" if p.disk_reads_per_call is None else f"{p.disk_reads_per_call:.1f}",
            p.plan,
        ]
        for r in reports
        for p in r.sizes
    ]
    header = ["Engine", "Rows", "Load s", "sample(20) mean ms", "p50 ms", "p99 ms", "purge(20 live) mean ms"]
    return markdown([*header, "p50 ms", "p99 ms", "InnoDB disk reads / call", "Sampling plan"], rows)


def size_ratio_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        small, large = r.sizes[0], r.sizes[-1]
        sample, purge = large.sample.mean_ms / small.sample.mean_ms, large.purge.mean_ms / small.purge.mean_ms
        flat = all(abs(x - 1) <= FLAT_TOLERANCE for x in (sample, purge))
        rows.append(
            [
                r.engine,
                f"{large.rows:,} / {small.rows:,}",
                f"{sample:.2f}x",
                ratio(large.sample.p50_ms, small.sample.p50_ms),
                ratio(large.sample.p99_ms, small.sample.p99_ms),
                f"{purge:.2f}x",
                ratio(large.purge.p50_ms, small.purge.p50_ms),
                ratio(large.purge.p99_ms, small.purge.p99_ms),
                "yes" if flat else "**no**",
            ]
        )
    header = ["Engine", "Sizes", "sample mean", "sample p50", "sample p99", "purge mean", "purge p50", "purge p99"]
    header.append("Means flat within ±50 %")
    return markdown(header, rows)


def bias_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        assert r.bias is not None
        for label, s in (
            ("first slots", r.bias.first),
            ("re-drawn slots", r.bias.redrawn),
            ("both summed", r.bias.both),
        ):
            rows.append(
                [
                    r.engine,
                    label,
                    f"{s.expected_per_key:g}",
                    f"{s.min} / {s.median:g} / {s.max}",
                    f"{s.cv:.3f}",
                    f"{s.cv_if_uniform:.3f}",
                    f"{s.cv_gap_model:.3f}",
                    f"{s.never_sampled} ({100 * s.never_sampled / s.keys:.2f} %)",
                    f"{s.chi2_uniform:,.0f} / {s.dof:,} ({s.chi2_per_dof_uniform:.2f})",
                    f"{s.chi2_per_dof_gap_model:.2f}",
                    f"{s.corr_count_window:.2f}",
                ]
            )
    header = ["Engine", "Run", "Expected/key", "Min / median / max", "CV", "CV if uniform", "CV gap model"]
    extra = ["Never sampled", "χ² vs uniform / dof (χ²/dof)", "χ²/dof vs gap model", "corr(count, window)"]
    return markdown([*header, *extra], rows)


def put_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        assert r.index_cost is not None
        by_case = {(c.index, c.keys, c.expiry): c.result for c in r.index_cost.cases}
        for keys in ("insert", "overwrite"):
            for expiry in ("ttl", "persistent"):
                with_, without = by_case[(True, keys, expiry)], by_case[(False, keys, expiry)]
                rows.append(
                    [
                        r.engine,
                        f"{keys} ({'fresh keys' if keys == 'insert' else 'existing keys'})",
                        "with TTL" if expiry == "ttl" else "persistent",
                        f"{with_.per_second:,.0f} ({with_.ops:,} ops)",
                        f"{without.per_second:,.0f} ({without.ops:,} ops)",
                        ratio(with_.per_second, without.per_second),
                        f"{with_.p99_ms:.2f} / {without.p99_ms:.2f}",
                        f"{created_share(with_):.0f} % / {created_share(without):.0f} %",
                        str(with_.errors + without.errors),
                    ]
                )
    header = ["Engine", "PUT", "Expiry", "Ops/s with index", "Ops/s without", "with / without"]
    return markdown([*header, "p99 ms with / without", "Created with / without", "Errors"], rows)


def created_share(result: Throughput) -> float:
    """Percentage of PUTs that created their key (inserts should be 100 %, overwrites 0 %)."""
    return 100 * result.outcomes.get("created", 0) / max(1, sum(result.outcomes.values()))


def index_timing(reports: list[BackendReport]) -> str:
    timings = [
        f"{r.engine} drop {r.index_cost.drop_s:.2f} s, rebuild {r.index_cost.rebuild_s:.2f} s"
        for r in reports
        if r.index_cost is not None
    ]
    return "Index DDL on the full table: " + "; ".join(timings) + "."


def reclaim_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        c = r.reclaim
        assert c is not None
        off, on, sweep, alone = c.without_sweeper, c.with_sweeper, c.during_load, c.alone
        drop = 1 - on.per_second / off.per_second
        rows.append(
            [
                r.engine,
                f"{off.per_second:,.0f}",
                f"{on.per_second:,.0f}",
                f"{-100 * drop:+.1f} %" + ("" if drop <= GET_DROP_TARGET else " **(target missed)**"),
                f"{off.p50_ms:.2f} / {on.p50_ms:.2f}",
                f"{off.p99_ms:.2f} / {on.p99_ms:.2f}",
                f"{sweep.dead_before - sweep.dead_after:,} of {sweep.dead_before:,} in {sweep.seconds:.1f} s",
                f"**{sweep.reclaimed_per_s:,.0f}**",
                f"{sweep.cycles:.0f} / {sweep.batches:.0f}",
                f"{sweep.stale_estimate:.3f}",
                f"{alone.reclaimed_per_s:,.0f} ({alone.cycles:.0f} / {alone.batches:.0f})",
            ]
        )
    header = ["Engine", "GET/s without", "GET/s with", "Change", "p50 ms without / with", "p99 ms without / with"]
    sweeper = ["Dead rows reclaimed under load", "Reclaimed rows/s under load", "Cycles / batches", "Stale estimate"]
    return markdown([*header, *sweeper, f"Rows/s, sweeper alone {SWEEPER_ALONE_S:g} s (cycles / batches)"], rows)


def errors_note(reports: list[BackendReport]) -> str:
    lines = []
    for r in reports:
        cases = r.index_cost.cases if r.index_cost is not None else []
        results = [(f"PUT {c.keys} {c.expiry} index={c.index}", c.result) for c in cases]
        if r.reclaim is not None:
            results += [
                ("GET without sweeper", r.reclaim.without_sweeper),
                ("GET with sweeper", r.reclaim.with_sweeper),
            ]
        lines += [
            f"- {r.engine} {label}: {t.errors} errors, first: {t.first_error}" for label, t in results if t.errors
        ]
    return "\n\nErrors:\n" + "\n".join(lines) if lines else ""


def render(reports: list[BackendReport], settings: dict[str, Any]) -> str:
    engines = ", ".join(f"{r.engine} {r.version} ({r.cache})" for r in reports)
    mode = "durable servers (fsync on commit)" if settings["durable"] else "servers not durable (no fsync on commit)"
    return (
        f"Engines: {engines}; {mode}; SQLite synchronous=FULL; values {len(VALUE)} bytes;"
        f" {settings['cpus']} CPUs; load average {settings['load_average_at_start'][0]:.2f} at the start,"
        f" {settings['load_average_at_end'][0]:.2f} at the end; wall time {settings['wall_time_s']:.0f} s.\n\n"
        f"## 1. Sampling cost vs table size\n\n"
        f"{SAMPLE_CALLS} calls of `sample_expiring({K})` and {PURGE_CALLS} of `purge` on {K} live keys, one at a"
        f" time after {WARMUP_CALLS} warm-up calls; half the rows expiring (with a slot), half persistent.\n\n"
        + size_table(reports)
        + "\n\nLarge size / small size (target: flat within ±50 %):\n\n"
        + size_ratio_table(reports)
        + f"\n\n## 2. Sampling bias\n\n{BIAS_ROWS:,} rows with an expiry, all live; {BIAS_CALLS:,} calls of"
        f" `sample_expiring({K})` ({BIAS_CALLS * K:,} draws) per run. CV: standard deviation / mean of the per-key"
        " counts. χ²/dof would be about 1.00 (± 0.014) if each call drew its keys uniformly. Gap model: a call"
        " returns key i when its random start falls between the slot of i's K-th predecessor and i's own, so key"
        " i's chance is that window (a sum of K exponential gaps: CV 1/√K) over the slot space; χ²/dof near 1"
        " against it means it explains the counts (a call returns K neighbouring keys, so their counts are"
        " correlated and χ²/dof strays further from 1 than ± 0.014). A fresh slot gives a key a fresh window;"
        " note that kvstore keeps a live expiring key's slot when it is overwritten (`COALESCE(sweep_slot, ?)`):"
        " only a key created anew (or turned from persistent to expiring) draws a new one.\n\n"
        + bias_table(reports)
        + f"\n\n## 3. Index cost on PUT throughput\n\nUnconditional `store._put` on the {settings['rows']:,}-row"
        f" table of section 1; {CONCURRENCY} tasks, {PUT_OPS:,} ops or {PUT_LIMIT_S:g} s per case, run as two"
        " half legs in the order with index, without, without, with (so that drift cancels out) and pooled."
        f" TTL writes use {PUT_TTL_MS // 1000} s; overwrites hit existing live keys of the same kind (expiring /"
        " persistent). PostgreSQL's and SQLite's index is partial (persistent rows are not in it); MariaDB's"
        " indexes every row, NULL slots included.\n\n"
        + put_table(reports)
        + "\n\n"
        + index_timing(reports)
        + f"\n\n## 4. Reclaim rate and foreground impact\n\n{RECLAIM_EXPIRED + RECLAIM_LIVE:,} rows,"
        f" {RECLAIM_EXPIRED:,} expired and {RECLAIM_LIVE:,} live with an expiry; {CONCURRENCY} tasks of `node.get`"
        f" on random live keys for {GET_SECONDS:g} s with a `ShardSweeper` (default settings) running in the same"
        f" process and pool, and for {GET_SECONDS:g} s without it, as {GET_SECONDS / 2:g} s before and"
        f" {GET_SECONDS / 2:g} s after (target: GET throughput drop ≤ {100 * GET_DROP_TARGET:.0f} %); then the sweeper"
        f" alone for {SWEEPER_ALONE_S:g} s. Dead rows are counted with SQL before and after each sweeper run; the"
        " stale estimate is `ShardSweeper.stale_estimate` at the end of the run under load.\n\n"
        + reclaim_table(reports)
        + errors_note(reports)
    )


def parse_backends(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise click.BadParameter(f"expected a comma-separated subset of {','.join(BACKENDS)}")
    return chosen


@click.command()
@click.option("--rows", default=1_000_000, show_default=True, type=click.IntRange(min=1000), help="Large table size.")
@click.option("--backends", default=",".join(BACKENDS), show_default=True, help="Comma-separated engines to run.")
@click.option("--durable/--no-durable", default=True, show_default=True, help="fsync on every commit (servers).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write all figures here.")
def main(rows: int, backends: str, durable: bool, json_path: Path | None) -> None:
    """Measure what the expiry sweeper costs: sampling, bias, index upkeep, reclaim rate."""
    chosen = parse_backends(backends)
    began = time.perf_counter()
    load_average = os.getloadavg()
    with ExitStack() as stack:
        locations: dict[str, str] = {}
        for backend in chosen:
            if backend == "sqlite":
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="kvstore-sweeper-bench-"))
                locations[backend] = str(Path(directory) / "bench.db")
            elif backend == "postgres":
                locations[backend] = stack.enter_context(PostgresInstance.temporary(durable=durable)).dsn()
            else:
                locations[backend] = stack.enter_context(MariaDBInstance.temporary(durable=durable)).dsn()
        runner = stack.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        reports = runner.run(run(locations, rows))
    settings = {
        "durable": durable,
        "rows": rows,
        "backends": chosen,
        "keys_per_sample": K,
        "value_bytes": len(VALUE),
        "sample_calls": SAMPLE_CALLS,
        "purge_calls": PURGE_CALLS,
        "warmup_calls": WARMUP_CALLS,
        "bias_rows": BIAS_ROWS,
        "bias_calls": BIAS_CALLS,
        "concurrency": CONCURRENCY,
        "put_ops": PUT_OPS,
        "put_limit_s": PUT_LIMIT_S,
        "get_seconds": GET_SECONDS,
        "sweeper": asdict(SweeperSettings()),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average,
        "load_average_at_end": os.getloadavg(),
        "wall_time_s": round(time.perf_counter() - began, 1),
        "kvstore_statements": {
            name: {"sample": module.STATEMENTS.sample, "purge": module.DIALECT.render(PURGE, keys=", ".join("?" * K))}
            for name, module in (("sqlite", sqlite_backend), ("postgres", postgres_backend), ("mysql", mysql_backend))
            if name in chosen
        },
    }
    progress(f"done in {settings['wall_time_s']:.0f} s")
    click.echo(render(reports, settings))
    if json_path is not None:
        figures = {"settings": settings, "backends": [asdict(report) for report in reports]}
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
