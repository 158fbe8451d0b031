"""The shards an admin command works on: the ring the shards record, whatever the config says.

Every admin command opens its shards here, the way ``serve`` does: the config's shards first,
then the router reads the ring record they hold and adopts the shards it names. A config that
describes neither ring of the record gets the router's warning (one line on stderr), so a
command run with yesterday's ``shards.yaml`` acts on today's ring and says so.

``open_fleet`` is for steps that need every shard (resharding, verify); ``reach_fleet`` for
commands that report or work shard by shard and go on without the ones that do not answer.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from kvstore.config import Settings
from kvstore.errors import KvError
from kvstore.reshard.migration import latest_record
from kvstore.ring_record import RingRecord
from kvstore.router import Router
from kvstore.shard import Shard


@dataclass
class Fleet:
    """The config's shards and those the ring record names, with the record in force."""

    settings: Settings
    router: Router
    record: RingRecord
    unreachable: dict[str, str] = field(default_factory=dict)  # shard -> why it could not be opened

    @property
    def shards(self) -> dict[str, Shard]:
        return self.router.shards


@contextlib.asynccontextmanager
async def open_fleet(settings: Settings, target: Settings | None = None) -> AsyncIterator[Fleet]:
    """Every shard open and answering, the newest record read from all of them, and the target
    config's shards added (with the schema, which holds the ring record); any failure raises."""
    router = Router(settings)
    try:
        await _open_all(router.shards.values())
        await router.refresh()
        if target is not None:
            added = [Shard.from_settings(s, settings.server) for s in target.shards if s.name not in router.shards]
            router.shards.update((shard.name, shard) for shard in added)
            await _open_all(added)
            for shard in added:
                await shard.primary.ensure_schema()
        yield Fleet(settings, router, await latest_record(router.shards, settings))
    finally:
        await router.close(5.0)


@contextlib.asynccontextmanager
async def reach_fleet(settings: Settings) -> AsyncIterator[Fleet]:
    """The shards that answer within the connect timeout, following the record any of them holds;
    with none answering, the config's ring (epoch 0)."""
    router = Router(settings)
    try:
        server = settings.server
        shards = list(router.shards.values())
        outcomes = await asyncio.gather(
            *(_open_within(shard, server.connect_timeout_s) for shard in shards), return_exceptions=True
        )
        unreachable = {s.name: str(o) for s, o in zip(shards, outcomes, strict=True) if isinstance(o, Exception)}
        if len(unreachable) < len(shards):
            with contextlib.suppress(KvError, TimeoutError):
                async with asyncio.timeout(server.connect_timeout_s + server.request_timeout_s):
                    await router.refresh()
        yield Fleet(settings, router, router.record, unreachable)
    finally:
        await router.close(5.0)


async def _open_all(shards: Iterable[Shard]) -> None:
    for shard in shards:
        await shard.open()


async def _open_within(shard: Shard, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await shard.open()
    except TimeoutError:
        raise KvError(f"shard {shard.name}: no answer within {timeout_s:g} s") from None
