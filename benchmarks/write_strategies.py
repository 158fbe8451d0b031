"""Write strategies on real PostgreSQL and MariaDB servers: two design questions, answered with figures.

Question 1, conditional writes (``If-Match``). C tasks each loop: pick a key, read its version with
``node.get``, then write it on condition that the version is unchanged, either

- optimistically, as kvstore does: one ``UPDATE … WHERE key = ? AND version = ? AND ttl > now``
  (``node.replace(key, value, None, if_version)``), or
- pessimistically, as the seed design did: ``SELECT … FOR UPDATE NOWAIT``, compare in Python,
  ``UPDATE``, ``COMMIT``, one transaction on one connection; a lock that is not available is a
  conflict.

It runs at low contention (10,000 keys) and high contention (4 keys) and reports attempts/s, the
success rate, p50/p99 latency of the write alone, and lost updates: successful writes made on a
version that another successful write had already replaced (there must be none).

Question 2, the unconditional upsert. kvstore's path (``node.put``: one
upsert statement that also reports whether it replaced a live row) and the earlier two-step path
("replace the live row, else create one": ``node.replace`` then ``node.create``) against a plain
``INSERT … ON DUPLICATE KEY UPDATE`` and ``REPLACE INTO`` on MariaDB, and against ``INSERT … ON
CONFLICT DO UPDATE`` on PostgreSQL; once overwriting live keys and once inserting new ones. Besides
ops/s and latency it shows what each write reports (rows affected, or created / replaced) and
whether the version keeps increasing when the row's version is ahead of the clock (as after a
burst of writes or a clock step back): ``REPLACE INTO`` starts a new lineage.

Each measurement stops after ``--ops`` operations or 15 s, whichever comes first; when that would
overrun the whole run's budget (under 4 minutes), the remaining measurements share what is left.
The servers are temporary instances on free ports (``kvstore.cluster``), removed at the end.

Run from the repository root::

    .venv/bin/python -m benchmarks.write_strategies [--ops N] [--concurrency C]
        [--durable/--no-durable] [--json OUT]
"""

import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, Self

import aiomysql
import asyncpg
import click
import pymysql
import uvloop

from benchmarks.load import percentile_ms
from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends import mysql as mysql_backend
from kvstore.backends import postgres as postgres_backend
from kvstore.backends.base import PERSISTENT_TTL
from kvstore.backends.sql import Dialect, Params
from kvstore.cluster import DatabaseInstance, MariaDBInstance, PostgresInstance
from kvstore.errors import describe

VALUE = os.urandom(100)
LOW_CONTENTION_KEYS = 10_000
HIGH_CONTENTION_KEYS = 4
OVERWRITE_KEYS = 10_000
MAX_MEASUREMENT_S = 15.0
RUN_BUDGET_S = 215.0  # measured from the start, servers included; teardown and probes fit in the rest of 4 min
STATEMENT_TIMEOUT_S = 10.0
AHEAD_US = 3_600_000_000  # the lineage probe starts from a version one hour ahead of the clock
PROBE_KEY = "lineage-probe"

# Question 1, the seed design: lock the row (failing at once if another transaction holds it),
# compare in Python, update. "now" comes back with the row so that liveness uses the server clock.
LOCK_ROW = "SELECT version, ttl, {now_ms} FROM store WHERE {key} = ? FOR UPDATE NOWAIT"
UPDATE_LOCKED = "UPDATE store SET value = ?, ttl = ?, version = {next_version} WHERE {key} = ?"
MARIADB_LOCK_NOT_AVAILABLE = frozenset({1205, 3572})  # MariaDB's NOWAIT reports 1205; MySQL 8 uses 3572

# Question 2: the plain single-statement upserts kvstore's two-step path is measured against.
UPSERT_STATEMENTS = {
    "postgres": {
        "INSERT … ON CONFLICT DO UPDATE": (
            "INSERT INTO store ({key}, value, ttl, version) VALUES (?, ?, ?, {now_us})"
            " ON CONFLICT ({key}) DO UPDATE SET value = excluded.value, ttl = excluded.ttl,"
            " version = GREATEST(store.version + 1, excluded.version)"
        ),
    },
    "mysql": {
        "INSERT … ON DUPLICATE KEY UPDATE": (
            "INSERT INTO store ({key}, value, ttl, version) VALUES (?, ?, ?, {now_us})"
            " ON DUPLICATE KEY UPDATE value = VALUES(value), ttl = VALUES(ttl),"
            " version = GREATEST(version + 1, VALUES(version))"
        ),
        "REPLACE INTO": "REPLACE INTO store ({key}, value, ttl, version) VALUES (?, ?, ?, {now_us})",
    },
}
KVSTORE_PUT = "kvstore node.put (upsert)"
TWO_STEP_PUT = "kvstore replace, else create"
TWO_STEP_ATTEMPTS = 16
KVSTORE_CONDITIONAL = "optimistic: kvstore UPDATE … AND version = ?"
SEED_CONDITIONAL = "pessimistic: SELECT … FOR UPDATE NOWAIT"

KVSTORE_STATEMENTS = ("get", "replace_if_version", "replace", "create", "upsert")

INSERT_ROW = "INSERT INTO store ({key}, value, ttl, version) VALUES (?, ?, ?, ?)"
READ_VERSION = "SELECT version FROM store WHERE {key} = ?"

Write = Callable[[], Awaitable[str]]
"""One timed operation; returns its outcome ("success", "version changed", "2 rows affected", ...)."""
Prepare = Callable[[random.Random, int], Awaitable[Write]]
"""Untimed set-up of operation number ``index`` (e.g. reading the version), returning the write."""
Upsert = Callable[[str], Awaitable[str]]
ConditionalWrite = Callable[[str, int], Awaitable[str]]
"""Write ``key`` if its version is still the given one: "success", "version changed" or "lock busy"."""


class RawPool(Protocol):
    """A driver pool used directly, for the statements kvstore does not run."""

    async def execute(self, sql: str, params: Params) -> int:
        """Run one autocommitted statement; return the rows it affected."""

    async def load(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for many rows."""

    async def fetch_value(self, sql: str, params: Params) -> Any:
        """The first column of the first row."""

    async def replace_locked(self, key: str, value: bytes, if_version: int) -> str:
        """The seed design's conditional write; returns a ``ConditionalWrite`` outcome."""

    async def close(self) -> None:
        """Close every connection."""


def _matches(row: Sequence[Any] | None, if_version: int) -> bool:
    """Whether a locked ``(version, ttl, now_ms)`` row is live and of version ``if_version``."""
    return row is not None and row[0] == if_version and row[1] > row[2]


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query on release, as kvstore's own pool: transactions always end before release."""


class PostgresPool:
    lock_row = postgres_backend.DIALECT.render(LOCK_ROW)
    update_locked = postgres_backend.DIALECT.render(UPDATE_LOCKED)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, size: int) -> Self:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=size,
            max_size=size,
            reset=_keep_session,
            server_settings={"statement_timeout": str(int(STATEMENT_TIMEOUT_S * 1000))},
        )
        return cls(pool)

    async def execute(self, sql: str, params: Params) -> int:
        status = await self._pool.execute(sql, *params)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def load(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._pool.executemany(sql, rows)

    async def fetch_value(self, sql: str, params: Params) -> Any:
        return await self._pool.fetchval(sql, *params)

    async def replace_locked(self, key: str, value: bytes, if_version: int) -> str:
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                if not _matches(await connection.fetchrow(self.lock_row, key), if_version):
                    return "version changed"
                await connection.execute(self.update_locked, value, PERSISTENT_TTL, key)
        except asyncpg.LockNotAvailableError:
            return "lock busy"
        return "success"

    async def close(self) -> None:
        await self._pool.close()


class MariaDBPool:
    lock_row = mysql_backend.DIALECT.render(LOCK_ROW)
    update_locked = mysql_backend.DIALECT.render(UPDATE_LOCKED)

    def __init__(self, pool: aiomysql.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, size: int) -> Self:
        pool = await aiomysql.create_pool(
            minsize=size,
            maxsize=size,
            autocommit=True,
            charset="utf8mb4",
            init_command=f"SET time_zone = '+00:00', SESSION max_statement_time = {STATEMENT_TIMEOUT_S}",
            **mysql_backend.connect_arguments(dsn),
        )
        return cls(pool)

    async def execute(self, sql: str, params: Params) -> int:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(sql, params)
            return int(cursor.rowcount)

    async def load(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.executemany(sql, rows)

    async def fetch_value(self, sql: str, params: Params) -> Any:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(sql, params)
            row = await cursor.fetchone()
        return row[0]

    async def replace_locked(self, key: str, value: bytes, if_version: int) -> str:
        try:
            async with self._pool.acquire() as connection:
                await connection.begin()
                try:
                    written = await self._lock_and_update(connection, key, value, if_version)
                except BaseException:
                    await connection.rollback()
                    raise
                await connection.commit()
        except pymysql.MySQLError as error:
            if error.args and error.args[0] in MARIADB_LOCK_NOT_AVAILABLE:
                return "lock busy"
            raise
        return "success" if written else "version changed"

    async def _lock_and_update(self, connection: aiomysql.Connection, key: str, value: bytes, if_version: int) -> bool:
        async with connection.cursor() as cursor:
            await cursor.execute(self.lock_row, (key,))
            if not _matches(await cursor.fetchone(), if_version):
                return False
            await cursor.execute(self.update_locked, (value, PERSISTENT_TTL, key))
        return True

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()


@dataclass(frozen=True)
class Engine:
    name: str
    backend: str
    dialect: Dialect
    node: Node
    raw: RawPool
    version: str


@asynccontextmanager
async def open_engine(instance: DatabaseInstance, concurrency: int) -> AsyncIterator[Engine]:
    """A kvstore node and a raw pool of the same size on ``instance``, with kvstore's schema."""
    settings = PoolSettings(concurrency, concurrency, connect_timeout_s=10, statement_timeout_s=STATEMENT_TIMEOUT_S)
    node = create_node(instance.backend, "bench", "primary", instance.dsn(), settings)
    async with AsyncExitStack() as stack:
        await node.open()
        stack.push_async_callback(node.close, 5.0)
        await node.ensure_schema()
        if instance.backend == "postgres":
            raw: RawPool = await PostgresPool.open(instance.dsn(), concurrency)
            name, dialect, version_query = "PostgreSQL", postgres_backend.DIALECT, "SHOW server_version"
        else:
            raw = await MariaDBPool.open(instance.dsn(), concurrency)
            name, dialect, version_query = "MariaDB", mysql_backend.DIALECT, "SELECT VERSION()"
        stack.push_async_callback(raw.close)
        version = str(await raw.fetch_value(version_query, ()))
        yield Engine(name, instance.backend, dialect, node, raw, version)


async def load(engine: Engine, count: int) -> list[str]:
    """Empty the store, then fill it with ``count`` live, persistent keys; return their names."""
    await engine.raw.execute("TRUNCATE TABLE store", ())
    names = [f"key-{index:05d}" for index in range(count)]
    now_us = time.time_ns() // 1000
    rows = [(name, VALUE, PERSISTENT_TTL, now_us) for name in names]
    if rows:
        await engine.raw.load(engine.dialect.render(INSERT_ROW), rows)
    return names


def conditional_writes(engine: Engine) -> dict[str, ConditionalWrite]:
    async def optimistic(key: str, version: int) -> str:
        written = await engine.node.replace(key, VALUE, None, if_version=version)
        return "version changed" if written is None else "success"

    async def pessimistic(key: str, version: int) -> str:
        return await engine.raw.replace_locked(key, VALUE, version)

    return {KVSTORE_CONDITIONAL: optimistic, SEED_CONDITIONAL: pessimistic}


def upserts(engine: Engine) -> dict[str, Upsert]:
    async def kvstore_put(key: str) -> str:
        _, created = await engine.node.put(key, VALUE, None)
        return "created" if created else "replaced"

    async def replace_else_create(key: str) -> str:
        for _ in range(TWO_STEP_ATTEMPTS):
            if await engine.node.replace(key, VALUE, None, None) is not None:
                return "replaced"
            if await engine.node.create(key, VALUE, None) is not None:
                return "created"
        raise RuntimeError(f"{key} changed under every attempt to write it")

    found: dict[str, Upsert] = {KVSTORE_PUT: kvstore_put, TWO_STEP_PUT: replace_else_create}
    for name, template in UPSERT_STATEMENTS[engine.backend].items():
        found[name] = partial(statement_upsert, engine.raw, engine.dialect.render(template))
    return found


async def statement_upsert(raw: RawPool, sql: str, key: str) -> str:
    affected = await raw.execute(sql, (key, VALUE, PERSISTENT_TTL))
    return f"{affected} row{'s' if affected != 1 else ''} affected"


async def conditional_workload(engine: Engine, keys: int, write: ConditionalWrite) -> Prepare:
    names = await load(engine, keys)
    consumed: set[tuple[str, int]] = set()

    async def prepare(rng: random.Random, index: int) -> Write:
        key = rng.choice(names)
        row = await engine.node.get(key)
        if row is None:
            raise RuntimeError(f"{key} is not live")
        version = row.version

        async def attempt() -> str:
            outcome = await write(key, version)
            if outcome != "success":
                return outcome
            if (key, version) in consumed:
                return "lost update"
            consumed.add((key, version))
            return "success"

        return attempt

    return prepare


async def overwrite_workload(engine: Engine, upsert: Upsert) -> Prepare:
    names = await load(engine, OVERWRITE_KEYS)

    async def prepare(rng: random.Random, index: int) -> Write:
        return partial(upsert, rng.choice(names))

    return prepare


async def insert_workload(engine: Engine, upsert: Upsert) -> Prepare:
    await load(engine, 0)

    async def prepare(rng: random.Random, index: int) -> Write:
        return partial(upsert, f"new-{index:07d}")

    return prepare


@dataclass(frozen=True)
class Case:
    question: int
    engine: Engine
    scenario: str
    variant: str
    start: Callable[[], Awaitable[Prepare]]


def plan(engines: list[Engine]) -> list[Case]:
    cases = []
    for engine in engines:
        for keys in (LOW_CONTENTION_KEYS, HIGH_CONTENTION_KEYS):
            for variant, write in conditional_writes(engine).items():
                start = partial(conditional_workload, engine, keys, write)
                cases.append(Case(1, engine, f"{keys:,} keys", variant, start))
    for engine in engines:
        for scenario, workload in (("overwrite live keys", overwrite_workload), ("insert new keys", insert_workload)):
            for variant, upsert in upserts(engine).items():
                cases.append(Case(2, engine, scenario, variant, partial(workload, engine, upsert)))
    return cases


@dataclass(frozen=True)
class Measurement:
    question: int
    engine: str
    scenario: str
    variant: str
    time_limit_s: float
    attempts: int
    elapsed_s: float
    per_second: float
    outcomes: dict[str, int]
    errors: int
    first_error: str | None
    p50_ms: float
    p99_ms: float


async def drive(case: Case, prepare: Prepare, ops: int, concurrency: int, time_limit_s: float) -> Measurement:
    """Run ``concurrency`` tasks until ``ops`` operations have started or ``time_limit_s`` has passed."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    issued = 0
    deadline = time.perf_counter() + time_limit_s

    async def worker(seed: int) -> None:
        nonlocal issued
        rng = random.Random(seed)
        while issued < ops and time.perf_counter() < deadline:
            index = issued
            issued += 1
            try:
                write = await prepare(rng, index)
                started = time.perf_counter()
                outcome = await write()
            except Exception as error:
                errors.append(describe(error))
                continue
            latencies.append(time.perf_counter() - started)
            outcomes[outcome] += 1

    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for seed in range(concurrency):
            group.create_task(worker(seed))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return Measurement(
        question=case.question,
        engine=case.engine.name,
        scenario=case.scenario,
        variant=case.variant,
        time_limit_s=round(time_limit_s, 2),
        attempts=issued,
        elapsed_s=round(elapsed, 3),
        per_second=round(issued / elapsed, 1),
        outcomes=dict(outcomes),
        errors=len(errors),
        first_error=errors[0] if errors else None,
        p50_ms=round(percentile_ms(latencies, 0.50), 3),
        p99_ms=round(percentile_ms(latencies, 0.99), 3),
    )


async def lineage(engine: Engine, upsert: Upsert) -> str:
    """What one upsert does to a row whose version is an hour ahead of the clock."""
    await load(engine, 0)
    ahead = time.time_ns() // 1000 + AHEAD_US
    await engine.raw.execute(engine.dialect.render(INSERT_ROW), (PROBE_KEY, VALUE, PERSISTENT_TTL, ahead))
    try:
        await upsert(PROBE_KEY)
    except Exception as error:
        return f"failed: {describe(error)}"
    after = int(await engine.raw.fetch_value(engine.dialect.render(READ_VERSION), (PROBE_KEY,)))
    return "kept increasing" if after > ahead else f"went back by {(ahead - after) / 1e6:,.0f} s"


@dataclass(frozen=True)
class Report:
    measurements: list[Measurement]
    lineage: dict[str, dict[str, str]]
    versions: dict[str, str]


async def run(instances: list[DatabaseInstance], ops: int, concurrency: int, deadline: float) -> Report:
    async with AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(open_engine(instance, concurrency)) for instance in instances]
        cases = plan(engines)
        measurements = []
        for done, case in enumerate(cases):
            prepare = await case.start()
            left_s = deadline - time.monotonic()
            time_limit_s = max(1.0, min(MAX_MEASUREMENT_S, left_s / (len(cases) - done)))
            measurement = await drive(case, prepare, ops, concurrency, time_limit_s)
            measurements.append(measurement)
            click.echo(
                f"[{done + 1}/{len(cases)}] Q{case.question} {case.engine.name} {case.scenario} {case.variant}:"
                f" {measurement.attempts} ops in {measurement.elapsed_s:.1f} s",
                err=True,
            )
        probes = {
            engine.name: {variant: await lineage(engine, upsert) for variant, upsert in upserts(engine).items()}
            for engine in engines
        }
        return Report(measurements, probes, {engine.name: engine.version for engine in engines})


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def relative(measurement: Measurement, baseline: Measurement | None) -> str:
    return f"{measurement.per_second / baseline.per_second:.2f}x" if baseline and baseline.per_second else "-"


def baseline_of(measurements: list[Measurement], variant: str) -> dict[tuple[str, str], Measurement]:
    return {(m.engine, m.scenario): m for m in measurements if m.variant == variant}


def conditional_table(measurements: list[Measurement]) -> str:
    baselines = baseline_of(measurements, KVSTORE_CONDITIONAL)
    rows = []
    for m in measurements:
        successes = m.outcomes.get("success", 0) + m.outcomes.get("lost update", 0)
        rows.append(
            [
                m.engine,
                m.scenario,
                m.variant,
                str(m.attempts),
                f"{m.per_second:,.0f}",
                relative(m, baselines.get((m.engine, m.scenario))),
                f"{100 * successes / max(m.attempts, 1):.1f} %",
                f"{successes / m.elapsed_s:,.0f}",
                str(m.outcomes.get("version changed", 0)),
                str(m.outcomes.get("lock busy", 0)),
                str(m.errors),
                f"{m.p50_ms:.2f}",
                f"{m.p99_ms:.2f}",
                str(m.outcomes.get("lost update", 0)),
            ]
        )
    header = ["Engine", "Keys", "Variant", "Attempts", "Writes/s", "vs kvstore", "Success", "Successes/s"]
    conflicts = ["Conflicts: version changed", "Conflicts: lock busy"]
    return markdown([*header, *conflicts, "Errors", "p50 ms", "p99 ms", "Lost updates"], rows)


def upsert_table(measurements: list[Measurement], probes: dict[str, dict[str, str]]) -> str:
    baselines = baseline_of(measurements, KVSTORE_PUT)
    rows = [
        [
            m.engine,
            m.scenario,
            m.variant,
            str(m.attempts),
            f"{m.per_second:,.0f}",
            relative(m, baselines.get((m.engine, m.scenario))),
            f"{m.p50_ms:.2f}",
            f"{m.p99_ms:.2f}",
            str(m.errors),
            ", ".join(f"{outcome}: {count}" for outcome, count in sorted(m.outcomes.items())),
            probes[m.engine][m.variant],
        ]
        for m in measurements
    ]
    header = ["Engine", "Case", "Variant", "Ops", "Ops/s", "vs kvstore", "p50 ms", "p99 ms", "Errors", "Outcomes"]
    return markdown([*header, "Version after overwriting a row 1 h ahead"], rows)


def errors_note(measurements: list[Measurement]) -> str:
    lines = [f"- {m.engine} {m.scenario} {m.variant}: {m.first_error}" for m in measurements if m.first_error]
    return "\n\nFirst error per measurement:\n" + "\n".join(lines) if lines else ""


def render(report: Report, settings: dict[str, Any]) -> str:
    conditional = [m for m in report.measurements if m.question == 1]
    upsert = [m for m in report.measurements if m.question == 2]
    servers = ", ".join(f"{name} {version}" for name, version in report.versions.items())
    mode = "durable (fsync on commit)" if settings["durable"] else "not durable (no fsync on commit)"
    return (
        f"Servers: {servers}; {mode}; up to {settings['ops']} ops or {MAX_MEASUREMENT_S:g} s per measurement;"
        f" concurrency {settings['concurrency']}; values {len(VALUE)} bytes.\n\n"
        "## Question 1: conditional writes (If-Match), optimistic vs pessimistic\n\n"
        + conditional_table(conditional)
        + errors_note(conditional)
        + "\n\n## Question 2: unconditional upsert\n\n"
        + upsert_table(upsert, report.lineage)
        + errors_note(upsert)
    )


@click.command()
@click.option("--ops", default=20_000, show_default=True, type=click.IntRange(min=1), help="Ops per measurement.")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(min=1), help="Concurrent tasks.")
@click.option("--durable/--no-durable", default=True, show_default=True, help="fsync on every commit.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write all figures here.")
def main(ops: int, concurrency: int, durable: bool, json_path: Path | None) -> None:
    """Benchmark conditional writes and upserts on temporary PostgreSQL and MariaDB servers."""
    deadline = time.monotonic() + RUN_BUDGET_S
    load_average = os.getloadavg()
    with (
        PostgresInstance.temporary(durable=durable) as postgres,
        MariaDBInstance.temporary(durable=durable) as mariadb,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        report = runner.run(run([postgres, mariadb], ops, concurrency, deadline))
    settings = {
        "durable": durable,
        "ops": ops,
        "concurrency": concurrency,
        "max_measurement_s": MAX_MEASUREMENT_S,
        "run_budget_s": RUN_BUDGET_S,
        "value_bytes": len(VALUE),
        "low_contention_keys": LOW_CONTENTION_KEYS,
        "high_contention_keys": HIGH_CONTENTION_KEYS,
        "overwrite_keys": OVERWRITE_KEYS,
        "server_versions": report.versions,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average,
        # kvstore is under development: record the exact SQL its measured paths ran.
        "kvstore_statements": {
            backend.DIALECT.name: {name: getattr(backend.STATEMENTS, name) for name in KVSTORE_STATEMENTS}
            for backend in (postgres_backend, mysql_backend)
        },
    }
    click.echo(render(report, settings))
    if json_path is not None:
        figures = {
            "settings": settings,
            "measurements": [asdict(m) for m in report.measurements],
            "version_lineage": report.lineage,
        }
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
