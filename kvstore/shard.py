"""A shard: one primary node (and, later, the replicas that follow it).

The shard decides which node serves an operation. Today every operation goes to the
primary; read routing to replicas plugs in here without the layers above changing.
"""

import asyncio
from dataclasses import dataclass

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.config import ServerSettings, ShardSettings


@dataclass
class Shard:
    name: str
    backend: str
    primary: Node

    @classmethod
    def from_settings(cls, settings: ShardSettings, server: ServerSettings) -> "Shard":
        pool = PoolSettings(
            min_size=server.pool_min_size if settings.pool_min_size is None else settings.pool_min_size,
            max_size=server.pool_max_size if settings.pool_max_size is None else settings.pool_max_size,
            connect_timeout_s=server.connect_timeout_s,
            statement_timeout_s=server.request_timeout_s,
        )
        primary = create_node(settings.backend, settings.name, "primary", settings.primary, pool)
        return cls(name=settings.name, backend=settings.backend, primary=primary)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.primary,)

    def reader(self) -> Node:
        return self.primary

    def writer(self) -> Node:
        return self.primary

    async def open(self) -> None:
        await self.primary.open()

    async def close(self, timeout_s: float) -> None:
        await asyncio.gather(*(node.close(timeout_s) for node in self.nodes))
