"""Key -> shard through the consistent-hash ring; owns the shards' lifecycle."""

import asyncio
from collections.abc import Iterable

from kvstore.config import Settings
from kvstore.errors import KvError
from kvstore.ring import HashRing
from kvstore.shard import Shard


class Router:
    def __init__(self, ring: HashRing, shards: Iterable[Shard]) -> None:
        self.ring = ring
        self.shards = {shard.name: shard for shard in shards}

    @classmethod
    def from_settings(cls, settings: Settings) -> "Router":
        shards = (Shard.from_settings(shard, settings.server) for shard in settings.shards)
        return cls(settings.ring(), shards)

    def shard_for(self, key: str) -> Shard:
        return self.shards[self.ring.owner(key)]

    async def init_schemas(self) -> dict[str, KvError | None]:
        """Open each shard's primary and create or check its schema: the error per shard, or None."""
        outcomes: dict[str, KvError | None] = {}
        for shard in self.shards.values():
            try:
                await shard.open()
                await shard.primary.ensure_schema()
            except KvError as error:
                outcomes[shard.name] = error
            else:
                outcomes[shard.name] = None
        return outcomes

    async def close(self, timeout_s: float) -> None:
        await asyncio.gather(*(shard.close(timeout_s) for shard in self.shards.values()))
