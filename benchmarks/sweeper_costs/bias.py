"""Section 2: sampling bias."""

import asyncio
import math
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from benchmarks.load import progress
from benchmarks.sweeper_costs.rows import FUTURE_MS, VALUE, K, key_name
from benchmarks.sweeper_costs.slot_index import reset
from benchmarks.target import Target, analyze, now_ms
from kvstore.backends.sql import SLOT_SPACE
from tests.support.rawdb import insert_rows

BIAS_ROWS = 10_000
BIAS_CALLS = 20_000
BIAS_CONCURRENCY = 8


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
