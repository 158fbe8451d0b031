"""The rows the experiments load, and the knobs they share."""

import os
import random
from collections.abc import Iterator

from benchmarks.target import Row
from kvstore.backends.base import PERSISTENT_TTL
from kvstore.backends.sql import SLOT_SPACE
from kvstore.config import SweeperSettings

VALUE = os.urandom(100)
K = SweeperSettings().keys_per_sample  # 20, the sweeper's batch
HOUR_MS = 3_600_000
FUTURE_MS = 10 * 365 * 24 * HOUR_MS  # "far in the future": ten years
CONCURRENCY = 16  # tasks of the PUT and GET loads


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
