"""A shard: one primary node and the read replicas that follow it by the database's own replication.

The shard decides which node serves an operation: writes and strong reads go to the primary;
other reads to a replica in rotation, unless a read-after position says the replica may not
have the data yet.
"""

import asyncio
from dataclasses import dataclass, field

from kvstore import metrics
from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import Row
from kvstore.config import ServerSettings, ShardSettings
from kvstore.errors import ShardError
from kvstore.replicas import ReplicaSet


@dataclass
class Shard:
    name: str
    backend: str
    primary: Node
    replicas: ReplicaSet | None = None
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
        return cls(name=settings.name, backend=settings.backend, primary=primary, replicas=replicas)

    @property
    def nodes(self) -> tuple[Node, ...]:
        replicas = () if self.replicas is None else tuple(health.node for health in self.replicas.replicas)
        return (self.primary, *replicas)

    def writer(self) -> Node:
        return self.primary

    async def read(self, key: str, *, strong: bool, after_position: str | None) -> Row | None:
        """GET routing: a replica in rotation when it can answer correctly, else the primary.

        With ``after_position`` the replica must have replayed that far (one extra round trip to
        it); a replica that fails mid-request is taken out of rotation and the read goes to the
        primary: one retry on another node, never a client error for the replica's sake.
        """
        if self.replicas is None:
            return await self.primary.get(key)
        chosen = None if strong else self.replicas.acquire()
        reason = "strong" if strong else "no_replica_in_rotation"
        if chosen is not None:
            replica = chosen.node
            try:
                if after_position is not None and not await replica.has_replayed(after_position):
                    reason = "replica_behind_read_after"
                else:
                    row = await replica.get(key)
                    metrics.READS.labels(self.name, "replica").inc()
                    return row
            except ShardError as error:
                self.replicas.take_out(replica, error.detail)
                reason = "replica_failed"
            finally:
                self.replicas.release(chosen)
        metrics.READ_FALLBACKS.labels(self.name, reason).inc()
        metrics.READS.labels(self.name, "primary").inc()
        return await self.primary.get(key)

    async def open(self) -> None:
        """Open the primary (once; again only after ``close``). Replicas are opened by their probe,
        so a down replica never blocks a start."""
        if not self._open:
            await self.primary.open()
            self._open = True

    async def close(self, timeout_s: float) -> None:
        self._open = False
        await asyncio.gather(*(node.close(timeout_s) for node in self.nodes))
