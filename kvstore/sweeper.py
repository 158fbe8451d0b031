"""Active expiry: Redis-style random sampling that keeps dead rows bounded without full scans.

Reads already hide expired and soft-deleted rows; the sweeper reclaims their space. It follows
Redis's ``activeExpireCycle`` (src/expire.c), per shard and on the primary only (replication
carries the deletes to replicas)::

    every tick (100 ms):                       # Redis: serverCron at hz 10, "slow" cycle
      repeat:
        sample K rows with an expiry (K=20)    # Redis: ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP
        hard-delete the sampled dead ones      # the DELETE re-checks ttl <= now
      while dead / sampled in this cycle       # Redis: ... in the last sample
            > threshold (25 %)                 # Redis: ACTIVE_EXPIRE_CYCLE_ACCEPTABLE_STALE (10 %)
        and the cycle budget (10 ms) remains   # Redis: SLOW_TIME_PERC 25 % of the tick
      stale estimate = 5 % this cycle + 95 %   # Redis: stat_expired_stale_perc

Where we differ, and why:

- Sampling is one seek at a random point of an index on ``sweep_slot`` (a random 62-bit number
  every row with an expiry, or deleted, carries; NULL for persistent rows), reading the next K
  rows: O(log n + K). Redis picks random hash-table buckets; we have a B-tree.
- The cycle continues while the dead fraction of *everything it sampled so far* is above the
  threshold, where Redis looks at the last 20 keys alone. Twenty keys are a noisy estimate: when
  the true fraction sits just above the threshold, one lucky sample ends Redis's cycle early. Redis
  runs ten cycles a second cheaply; here each early stop idles a shard for a whole tick, and dead
  rows settled measurably above the threshold. The cumulative ratio keeps the same threshold with
  less noise, so the dead fraction really falls below it.
- The cycle's clock is read after every batch, not every 16 (a batch is a database round trip,
  which dwarfs a clock read).
- No "fast" cycle between event-loop iterations: the tick is the only trigger.
- The budget is 10 % of the tick, not Redis's 25 %: the sweeper shares the worker's event loop with
  requests, and with 25 % a CPU-bound worker served 25 % fewer GETs while it reclaimed.
- One sweeper per shard at a time, across all front ends and ``kvstore sweep``: it works only
  while holding the shard's sweeper lock (advisory lock / ``GET_LOCK`` / ``flock``), which dies
  with its holder. A front end holds it for a burst of cycles (``BURST_S``), then gives it back
  for at least a tick (``YIELD_S``), so that ``kvstore sweep`` can take it from a live system; it
  takes it again afterwards if nobody else did. Taking and giving back are one round trip each on a connection
  kept for the purpose.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from kvstore import metrics
from kvstore.backends.base import Node, SweeperLock
from kvstore.config import SweeperSettings
from kvstore.errors import ShardError

log = logging.getLogger("kvstore.sweeper")
_STALE_SMOOTHING = 0.05  # weight of the newest cycle in the running estimate, as in Redis
BURST_S = 1.0  # a front end sweeps this long under the lock, then gives it back for YIELD_S
LOCK_POLL_S = 0.05  # how often `kvstore sweep` tries for the lock while it waits
YIELD_S = 2 * LOCK_POLL_S  # long enough for a waiting `kvstore sweep` to try at least once
_LOCK_RETRY_S = 2.0  # a front end that found the lock taken tries again after this long
_BATCH_DEADLINE_S = 5.0


@dataclass(slots=True)
class CycleResult:
    sampled: int = 0
    dead: int = 0
    deleted: int = 0
    batches: int = 0

    @property
    def stale(self) -> float:
        return self.dead / self.sampled if self.sampled else 0.0


# Which of some dead rows' keys may be hard-deleted now (``Router.may_purge``).
PurgeGuard = Callable[[Sequence[str]], list[str]]


def _any_key(keys: Sequence[str]) -> list[str]:
    return list(keys)


async def sweep_cycle(
    node: Node, settings: SweeperSettings, budget_s: float | None, may_purge: PurgeGuard = _any_key
) -> CycleResult:
    """Sample and purge until a sample comes back clean enough or ``budget_s`` is spent.

    ``may_purge`` guards rows a migration still needs (``Router.may_purge``); they count as
    live here, so that a shard full of them does not keep the cycle busy.
    """
    result = CycleResult()
    started = time.monotonic()
    while True:
        sample = await node.sample_expiring(settings.keys_per_sample)
        dead = may_purge([key for key, is_dead in sample if is_dead])
        deleted = await node.purge(dead)
        result.sampled += len(sample)
        result.dead += len(dead)
        result.deleted += deleted
        result.batches += 1
        if not sample or result.stale <= settings.stale_threshold:
            return result
        if budget_s is not None and time.monotonic() - started >= budget_s:
            return result


class ShardSweeper:
    """Runs sweep cycles on one shard's primary while holding that shard's sweeper lock."""

    def __init__(
        self,
        shard: str,
        node: Node,
        settings: SweeperSettings,
        may_purge: PurgeGuard = _any_key,
        routing: Callable[[], AbstractAsyncContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.shard = shard
        self.node = node
        self.settings = settings
        self.may_purge = may_purge
        # A cycle runs routed by one ring epoch (``Router.routing``): the one ``may_purge`` decides
        # by is the one its deletes are fenced with.
        self.routing = routing
        self.stale_estimate = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        lock = self.node.sweeper_lock()
        burst_ends = 0.0
        try:
            while not stop.is_set():
                tick_started = time.monotonic()
                if not lock.held():
                    if not await self._acquire(lock):
                        metrics.SWEEPER_ACTIVE.labels(self.shard).set(0)
                        await _wait(stop, _LOCK_RETRY_S)
                        continue
                    metrics.SWEEPER_ACTIVE.labels(self.shard).set(1)
                    burst_ends = tick_started + BURST_S
                await self._cycle()
                next_tick_s = self.settings.tick_ms / 1000 - (time.monotonic() - tick_started)
                if time.monotonic() >= burst_ends:
                    await self._give_back(lock)  # `kvstore sweep` or another front end may take it meanwhile
                    next_tick_s = max(next_tick_s, YIELD_S)
                await _wait(stop, next_tick_s)
        finally:
            await lock.close()  # at once, without a round trip: the database may be the reason we stop
            metrics.SWEEPER_ACTIVE.labels(self.shard).set(0)

    async def _acquire(self, lock: SweeperLock) -> bool:
        try:
            async with asyncio.timeout(_BATCH_DEADLINE_S):
                return await lock.acquire()
        except ShardError as error:
            log.warning("sweeper cannot reach its shard", extra={"shard": self.shard, "error": error.detail})
        except TimeoutError:
            log.warning("sweeper lock: no answer", extra={"shard": self.shard})
        return False

    async def _give_back(self, lock: SweeperLock) -> None:
        """Release the lock; a database that does not answer in time gets the session closed instead."""
        try:
            async with asyncio.timeout(_BATCH_DEADLINE_S):
                await lock.release()
        except TimeoutError:
            await lock.close()

    async def _cycle(self) -> None:
        started = time.monotonic()
        budget_s = self.settings.cycle_budget_ms / 1000
        try:
            # The budget is checked between batches; this deadline bounds a batch stuck on a busy
            # pool or database, so that the sweeper (and shutdown, which waits for it) never hangs.
            async with self.routing(), asyncio.timeout(budget_s + _BATCH_DEADLINE_S):
                result = await sweep_cycle(self.node, self.settings, budget_s, self.may_purge)
        except ShardError as error:
            log.warning("sweep cycle failed", extra={"shard": self.shard, "error": error.detail})
            return
        except TimeoutError:
            log.warning("sweep cycle timed out", extra={"shard": self.shard})
            return
        except Exception:  # a bug must not silently end the shard's sweeping
            log.exception("sweep cycle failed", extra={"shard": self.shard})
            return
        self.stale_estimate = _STALE_SMOOTHING * result.stale + (1 - _STALE_SMOOTHING) * self.stale_estimate
        metrics.record_sweep(self.shard, result, time.monotonic() - started, self.stale_estimate)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def acquire_within(lock: SweeperLock, timeout_s: float) -> bool:
    """Take ``lock``, trying every ``LOCK_POLL_S`` for up to ``timeout_s``: a front end's sweeper
    gives it back between bursts, so a manual sweep gets it within about ``BURST_S``."""
    deadline = time.monotonic() + timeout_s
    while not await lock.acquire():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(LOCK_POLL_S)
    return True


@dataclass(slots=True)
class FullSweepProgress:
    scanned: int = 0
    deleted: int = 0


async def full_sweep(node: Node, batch_size: int, progress: FullSweepProgress) -> FullSweepProgress:
    """Walk the whole table in key order, ``batch_size`` keys at a time, purging the dead ones.

    Each batch is its own short statement (never one giant transaction), so foreground traffic
    interleaves with it; ``progress`` is updated in place for the caller to display.
    """
    after = ""
    while keys := await node.scan_keys(after, batch_size):
        progress.deleted += await node.purge(keys)
        progress.scanned += len(keys)
        after = keys[-1]
    return progress
