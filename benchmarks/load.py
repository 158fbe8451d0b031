"""The load harness the benchmarks share: run an operation from many tasks, bounded by a count and a
time, and summarise latencies (nearest-rank percentiles) and outcomes.

Used by the sweeper experiments (``benchmarks.sweeper_costs``) and the raw-driver ceiling
(``benchmarks.raw``): one implementation, so their figures are computed alike.
"""

import asyncio
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from kvstore.errors import describe

Operation = Callable[[random.Random], Awaitable[str | None]]
"""One timed operation of a load; returns an outcome to count, or None."""


def progress(message: str) -> None:
    """A time-stamped line on stderr, so that a long run shows where it is."""
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


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


async def time_calls(calls: int, call: Callable[[], Awaitable[Any]], warmup: int) -> Latency:
    """``calls`` calls one after another, after ``warmup`` untimed calls."""
    for _ in range(warmup):
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
