"""Section 3: index cost on PUT throughput."""

import random
import time
import uuid
from dataclasses import dataclass

from benchmarks.load import Leg, Operation, Throughput, drive, progress
from benchmarks.sweeper_costs.rows import CONCURRENCY, HOUR_MS, VALUE, key_name
from benchmarks.sweeper_costs.slot_index import CREATE_INDEX, DROP_INDEX, has_index
from benchmarks.target import Target, execute

PUT_OPS = 20_000
PUT_LIMIT_S = 15.0
PUT_TTL_MS = HOUR_MS
ABBA = (True, False, False, True)  # legs: with the index, without, without, with


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
