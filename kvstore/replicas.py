"""ReplicaSet: a shard's read replicas, their health and lag, and which of them serve reads.

A background probe per shard asks the primary for its replication position, then each
replica how far it has replayed. A replica serves reads (is "in rotation") while it answers
its probes and its lag is at most ``max_replica_lag_s``; otherwise reads fall back to the
other replicas or the primary until it is healthy again.

Lag is the engine's own figure (PostgreSQL: time since the last replayed transaction;
MariaDB: ``Seconds_Behind_Master``), bounded by how long the probe has seen the replica
behind the primary's position. The first alone would call an idle replica hours behind after
one fresh write; the second alone could not see a replica that is stuck.

Which replica in rotation serves a read is ``server.replica_selection``: ``least_outstanding``
(the default: the fewest reads in flight, ties round-robin), which steers reads away from a
replica that answers slowly without measuring its latency, or plain ``round_robin``. With one
standby 2 ms slower the first served 1.6-2x the reads/s of the second, and as many with equal
standbys (``benchmarks/replica_selection.py``).
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvstore import metrics
from kvstore.backends.base import Node
from kvstore.errors import ShardError

log = logging.getLogger("kvstore.replicas")

Selection = Callable[[Sequence[int], Sequence[bool], int], int | None]
"""``(in_flight, in_rotation, turn) -> index`` of the replica to read from, or None when none serves."""


def round_robin(in_flight: Sequence[int], in_rotation: Sequence[bool], turn: int) -> int | None:
    """The ``turn``-th replica in rotation, cycling; what is in flight is ignored."""
    serving = [index for index, serves in enumerate(in_rotation) if serves]
    return serving[turn % len(serving)] if serving else None


def least_outstanding(in_flight: Sequence[int], in_rotation: Sequence[bool], turn: int) -> int | None:
    """The replica in rotation with the fewest reads in flight; among equals the ``turn``-th, cycling."""
    fewest = 0
    tied: list[int] = []  # one pass, no sorting: this runs on every read
    for index, count in enumerate(in_flight):
        if not in_rotation[index]:
            continue
        if count < fewest or not tied:
            fewest, tied = count, [index]
        elif count == fewest:
            tied.append(index)
    return tied[turn % len(tied)] if tied else None


SELECTIONS: dict[str, Selection] = {"round_robin": round_robin, "least_outstanding": least_outstanding}


@dataclass
class ReplicaHealth:
    node: Node
    in_rotation: bool = False  # a replica earns its place with a first good probe
    lag_s: float | None = None
    behind_since: float | None = None
    opened: bool = False
    probed: bool = False
    problem: str | None = "not probed yet"
    in_flight: int = 0  # reads between ReplicaSet.acquire and release


class ReplicaSet:
    def __init__(
        self,
        shard: str,
        primary: Node,
        replicas: list[Node],
        max_lag_s: float,
        probe_timeout_s: float,
        selection: str,
    ) -> None:
        if selection not in SELECTIONS:
            raise ValueError(f"replica selection {selection!r}: expected one of {', '.join(SELECTIONS)}")
        self.shard = shard
        self.primary = primary
        self.replicas = [ReplicaHealth(node) for node in replicas]
        self.max_lag_s = max_lag_s
        self.probe_timeout_s = probe_timeout_s
        self.selection = selection
        self._select = SELECTIONS[selection]
        self._turns = itertools.count()

    def pick(self) -> Node | None:
        """The replica in rotation the next read should go to, or None when none is."""
        health = self._choose()
        return None if health is None else health.node

    def acquire(self) -> ReplicaHealth | None:
        """Like ``pick``, and count the read in flight on the replica until ``release``."""
        health = self._choose()
        if health is not None:
            health.in_flight += 1
        return health

    def release(self, health: ReplicaHealth) -> None:
        health.in_flight -= 1

    def _choose(self) -> ReplicaHealth | None:
        replicas = self.replicas
        index = self._select(
            [health.in_flight for health in replicas], [health.in_rotation for health in replicas], next(self._turns)
        )
        return None if index is None else replicas[index]

    def take_out(self, node: Node, problem: str) -> None:
        """A request to ``node`` failed: no more reads for it until a probe finds it healthy."""
        for health in self.replicas:
            if health.node is node and health.in_rotation:
                health.in_rotation, health.problem = False, problem
                metrics.REPLICA_IN_ROTATION.labels(self.shard, node.role).set(0)
                log.warning("replica out of rotation", extra={"replica": node.label, "error": problem})

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            await self.probe()
            try:
                async with asyncio.timeout(interval_s):
                    await stop.wait()
            except TimeoutError:
                pass

    async def probe(self) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                position = await self.primary.replication_position()
        except (ShardError, TimeoutError):
            return  # without the primary's position lag cannot be judged: leave rotation as it is
        await asyncio.gather(*(self._probe(health, position) for health in self.replicas))

    async def _probe(self, health: ReplicaHealth, position: str) -> None:
        node = health.node
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                if not health.opened:
                    await node.open()
                    health.opened = True
                state = await node.replica_state(position)
        except (ShardError, TimeoutError) as error:
            self._update(health, None, f"probe failed: {getattr(error, 'detail', 'timed out')}")
            return
        except Exception as error:  # a bug must not end the probe loop nor leave the replica serving
            log.exception("replica probe failed", extra={"replica": node.label})
            self._update(health, None, f"probe failed: {type(error).__name__}")
            return
        if state.seconds_since_replay is None:
            self._update(health, None, "replication is not running")
            return
        now = time.monotonic()
        if state.caught_up:
            health.behind_since = None
            lag = 0.0
        else:
            health.behind_since = health.behind_since or now
            lag = min(state.seconds_since_replay, now - health.behind_since)
        self._update(health, lag, None if lag <= self.max_lag_s else f"lag {lag:.1f} s > {self.max_lag_s:g} s")

    def _update(self, health: ReplicaHealth, lag_s: float | None, problem: str | None) -> None:
        first, was_serving, was_problem = not health.probed, health.in_rotation, health.problem
        health.lag_s, health.problem, health.in_rotation, health.probed = lag_s, problem, problem is None, True
        role = health.node.role
        metrics.REPLICA_IN_ROTATION.labels(self.shard, role).set(int(health.in_rotation))
        if lag_s is not None:
            metrics.REPLICA_LAG.labels(self.shard, role).set(lag_s)
        replica = health.node.label
        # Only what changed: the first probe settles where a replica starts, later ones log a move.
        if health.in_rotation and first:
            log.info("replica in rotation", extra={"replica": replica})
        elif health.in_rotation and not was_serving:
            log.info("replica back in rotation", extra={"replica": replica, "was": was_problem})
        elif not health.in_rotation and (first or was_serving):
            log.warning("replica out of rotation", extra={"replica": replica, "problem": problem})

    async def close(self, timeout_s: float) -> None:
        await asyncio.gather(*(health.node.close(timeout_s) for health in self.replicas))
