"""A shard: one primary node and the read replicas that follow it by the database's own replication.

The shard decides which node serves an operation: writes and strong reads go to the primary;
other reads to a replica in rotation, unless a read-after position says the replica may not
have the data yet. With batching on, every node's reads and the primary's writes go through
that node's lanes (``batching.py``), which coalesce concurrent requests into one statement.
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kvstore import metrics
from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import Put, Row
from kvstore.batching import Attempt, ReadLane, WriteLane
from kvstore.config import ServerSettings, ShardSettings
from kvstore.errors import ShardError, StaleRing
from kvstore.positions import PRIMARY_ONLY, position_after_write
from kvstore.replicas import ReplicaSet

T = TypeVar("T")
_BATCH_MAX_BYTES = 4 * 1024 * 1024  # a write batch stops growing past this many value bytes


@dataclass(frozen=True, slots=True)
class Lanes:
    """How a shard's requests reach its nodes: batched through lanes, or one statement each."""

    reads: dict[str, ReadLane]  # by node label; empty when batching is off
    writes: WriteLane | None

    @classmethod
    def build(cls, primary: Node, replicas: list[Node], server: ServerSettings, pool_max_size: int) -> "Lanes":
        """A primary's pool is split between writes (three quarters: they wait on fsync, and more of
        them in flight lets the database group commits) and reads (a quarter: reads are quick, and
        fewer of them in flight makes bigger batches, which cost the front end less CPU per key);
        replicas read with as few. Measured on PostgreSQL at 64 connections: 6 read slots sent
        6 keys per statement, 1 slot 32, for 10% less CPU per GET at the same throughput."""
        if not server.batching:
            return cls({}, None)
        keys = server.batch_max_keys
        readers = max(1, pool_max_size // 4)
        writers = max(1, pool_max_size - readers)
        reads = {primary.label: ReadLane(primary, readers, keys)}
        reads |= {replica.label: ReadLane(replica, readers, keys) for replica in replicas}
        writes = WriteLane(primary, writers, keys, _BATCH_MAX_BYTES, read_after=bool(replicas))
        return cls(reads, writes)

    async def quiet(self) -> None:
        """Wait until no statement of any lane runs or waits to."""
        lanes: list[ReadLane | WriteLane] = [*self.reads.values(), *([] if self.writes is None else [self.writes])]
        await asyncio.gather(*(lane.quiet() for lane in lanes))

    async def close(self) -> None:
        closing = [lane.close() for lane in self.reads.values()]
        if self.writes is not None:
            closing.append(self.writes.close())
        await asyncio.gather(*closing)


@dataclass
class Shard:
    name: str
    backend: str
    primary: Node
    replicas: ReplicaSet | None = None
    lanes: Lanes = field(default_factory=lambda: Lanes({}, None), repr=False)
    _open: bool = field(default=False, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: ShardSettings, server: ServerSettings) -> "Shard":
        pool = PoolSettings(
            min_size=server.pool_min_size if settings.pool_min_size is None else settings.pool_min_size,
            max_size=server.pool_max_size if settings.pool_max_size is None else settings.pool_max_size,
            connect_timeout_s=server.connect_timeout_s,
            statement_timeout_s=server.request_timeout_s,
        )
        primary = create_node(settings.backend, settings.name, "primary", settings.primary, pool)
        replica_nodes = [
            create_node(settings.backend, settings.name, f"replica{index}", dsn, pool)
            for index, dsn in enumerate(settings.replicas, start=1)
        ]
        replicas = (
            ReplicaSet(
                settings.name,
                primary,
                replica_nodes,
                server.max_replica_lag_s,
                server.connect_timeout_s,
                server.replica_selection,
            )
            if replica_nodes
            else None
        )
        lanes = Lanes.build(primary, replica_nodes, server, pool.max_size)
        return cls(name=settings.name, backend=settings.backend, primary=primary, replicas=replicas, lanes=lanes)

    def route_by(self, epoch: int) -> None:
        """Fence every statement of this shard's nodes with ring epoch ``epoch`` (``Node.routed_epoch``)."""
        for node in self.nodes:
            node.routed_epoch = epoch

    @property
    def nodes(self) -> tuple[Node, ...]:
        replicas = () if self.replicas is None else tuple(health.node for health in self.replicas.replicas)
        return (self.primary, *replicas)

    def writer(self) -> Node:
        return self.primary

    async def put(self, write: Put, attempt: Attempt) -> tuple[Row, bool, str | None]:
        """An unconditional PUT on the primary: ``(row, created, replication position)``; the
        position (for read-after tokens) only on shards with replicas."""
        if self.lanes.writes is not None:
            (row, created), position = await self.lanes.writes.put(write, attempt)
            return row, created, position
        attempt.sent = True
        row, created = await self.primary.put(write.key, write.value, write.ttl_ms)
        return row, created, await self.position()

    async def delete(self, key: str, attempt: Attempt) -> tuple[bool, str | None]:
        """An unconditional soft delete on the primary: ``(was live, replication position)``."""
        if self.lanes.writes is not None:
            return await self.lanes.writes.delete(key, attempt)
        attempt.sent = True
        return await self.primary.soft_delete(key, None), await self.position()

    async def put_many(self, writes: Sequence[Put], attempts: Sequence[Attempt]) -> list[Any]:
        """Unconditional PUTs of a client's batch (keys distinct): per write ``((row, created),
        position)``, or the exception that write failed with."""
        if self.lanes.writes is not None:
            return await self.lanes.writes.put_many(writes, attempts)
        for attempt in attempts:
            attempt.sent = True
        try:
            rows = await self.primary.put_many(sorted(writes, key=lambda write: write.key))
            position = await self.position()
        except Exception as error:  # one answer for every write: the statement was all or nothing
            return [error] * len(writes)
        by_key = {write.key: row for write, row in zip(sorted(writes, key=lambda write: write.key), rows, strict=True)}
        return [(by_key[write.key], position) for write in writes]

    async def delete_many(self, keys: Sequence[str], attempts: Sequence[Attempt]) -> list[Any]:
        """Unconditional soft deletes of a client's batch (keys distinct): per key ``(was live,
        position)``, or the exception it failed with."""
        if self.lanes.writes is not None:
            return await self.lanes.writes.delete_many(keys, attempts)
        for attempt in attempts:
            attempt.sent = True
        try:
            deleted = await self.primary.delete_many(sorted(keys))
            position = await self.position()
        except Exception as error:
            return [error] * len(keys)
        return [(key in deleted, position) for key in keys]

    async def write(self, key: str, attempt: Attempt, call: Callable[[Node], Awaitable[T]]) -> tuple[T, str | None]:
        """Any other write to ``key`` on the primary, in the key's turn: ``(result, position)``."""
        if self.lanes.writes is not None:
            return await self.lanes.writes.run(key, attempt, call)
        attempt.sent = True
        return await call(self.primary), await self.position()

    async def position(self) -> str | None:
        """The primary's replication position now (for read-after tokens); None without replicas.

        Read after a committed write: when it cannot be read, the token sends reads to the primary."""
        return None if self.replicas is None else await position_after_write(self.primary.replication_position)

    async def read_many(self, keys: Sequence[str], *, strong: bool, after_position: str | None) -> dict[str, Row]:
        """The live rows of ``keys``, routed as ``read`` routes one key: one statement per node."""
        return await self.read_with(
            functools.partial(self._get_many, keys=keys), strong=strong, after_position=after_position
        )

    async def _get_many(self, node: Node, *, keys: Sequence[str]) -> dict[str, Row]:
        lane = self.lanes.reads.get(node.label)
        return await node.get_many(keys) if lane is None else await lane.get_many(keys)

    async def _get(self, node: Node, *, key: str) -> Row | None:
        lane = self.lanes.reads.get(node.label)
        return await node.get(key) if lane is None else await lane.get(key)

    async def read(self, key: str, *, strong: bool, after_position: str | None) -> Row | None:
        """GET routing (see ``read_with``); through the node's read lane where batching is on."""
        return await self.read_with(functools.partial(self._get, key=key), strong=strong, after_position=after_position)

    async def read_with(self, call: Callable[[Node], Awaitable[T]], *, strong: bool, after_position: str | None) -> T:
        """Run a read on a replica in rotation when it can answer correctly, else on the primary.

        With ``after_position`` the replica must have replayed that far (one extra round trip to
        it); a replica that fails mid-request is taken out of rotation and the read goes to the
        primary: one retry on another node, never a client error for the replica's sake.
        """
        if self.replicas is None:
            return await call(self.primary)
        strong = strong or after_position == PRIMARY_ONLY
        chosen = None if strong else self.replicas.acquire()
        reason = "strong" if strong else "no_replica_in_rotation"
        if chosen is not None:
            replica = chosen.node
            try:
                if after_position is not None and not await replica.has_replayed(after_position):
                    reason = "replica_behind_read_after"
                else:
                    result = await call(replica)
                    metrics.count_read(self.name, "replica")
                    return result
            except StaleRing:  # it has not replayed the newest ring record yet: the primary has
                reason = "replica_behind_ring"
            except ShardError as error:
                self.replicas.take_out(replica, error.detail)
                reason = "replica_failed"
            finally:
                self.replicas.release(chosen)
        metrics.READ_FALLBACKS.labels(self.name, reason).inc()
        metrics.count_read(self.name, "primary")
        return await call(self.primary)

    async def open(self) -> None:
        """Open the primary (once; again only after ``close``). Replicas are opened by their probe,
        so a down replica never blocks a start."""
        if not self._open:
            await self.primary.open()
            self._open = True

    async def close(self, timeout_s: float) -> None:
        self._open = False
        await self.lanes.close()
        await asyncio.gather(*(node.close(timeout_s) for node in self.nodes))
