"""The key-value operations as the API promises them, over the router's shards.

This layer turns one client operation into the node calls that implement it atomically,
applies the per-request deadline, and records per-shard latency and errors. It knows
nothing of HTTP and nothing of SQL.

Conditional writes map to one conditional statement each; an unconditional PUT is the
backend's upsert (``Node.put``).

During a migration (see ``reshard/state.py``) a key whose owner changes is served by its new
owner: a write there first copies the key's row from the old owner unless the new owner has
one (so versions continue their lineage, and a conditional write sees the key's real state);
a read that finds no row at all on the new owner reads the old one. Both go to primaries, since
a replica's "no row" might only mean "not replayed yet".
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kvstore import metrics
from kvstore.backends.base import Node, Row
from kvstore.conditions import Precondition
from kvstore.errors import ShardError, ShardTimeout, ShardUnavailable
from kvstore.positions import decode_read_after, encode_read_after
from kvstore.reshard.state import write_pause_detail
from kvstore.router import Route, Router
from kvstore.shard import Shard

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteResult:
    row: Row | None  # the row the write left (None after a delete)
    created: bool = False
    read_after: str | None = None  # token for reading this write from a replica (shards with replicas)


class KeyValueStore:
    def __init__(self, router: Router, request_timeout_s: float) -> None:
        self.router = router
        self.request_timeout_s = request_timeout_s

    async def get(self, key: str, *, strong: bool = False, read_after: str | None = None) -> Row | None:
        """Read a key from a replica in rotation, or the primary when ``strong``, when there is no
        such replica, or when the replica has not replayed ``read_after`` yet. A read whose connection
        broke is retried once (it is idempotent)."""
        route = self.router.route(key)
        shard = route.owner
        if route.fallback is not None:
            return await self._run(shard, "get", False, lambda: _read_moving(route, key))
        position = None
        if read_after is not None:
            token_shard, position = decode_read_after(read_after)
            strong = strong or token_shard != shard.name

        async def read() -> Row | None:
            try:
                return await shard.read(key, strong=strong, after_position=position)
            except ShardUnavailable:
                metrics.SHARD_ERRORS.labels(shard.name, "retried_read").inc()
                return await shard.read(key, strong=True, after_position=None)

        return await self._run(shard, "get", False, read)

    async def put(self, key: str, value: bytes, ttl_ms: int | None, precondition: Precondition) -> WriteResult:
        route = self._write_route(key)
        shard = route.owner

        async def write() -> WriteResult:
            await _pull(route, key)
            row, created = await _put(shard.writer(), key, value, ttl_ms, precondition)
            return WriteResult(row, created, await _read_after(shard))

        return await self._run(shard, "put", True, write)

    async def touch(self, key: str, ttl_ms: int | None, precondition: Precondition) -> WriteResult | None:
        """Change the expiry; None when the key is not live (and the request was unconditional)."""
        route = self._write_route(key)
        shard = route.owner

        async def write() -> WriteResult | None:
            await _pull(route, key)
            row = await shard.writer().touch(key, ttl_ms, precondition.if_version)
            return None if row is None else WriteResult(row, read_after=await _read_after(shard))

        result = await self._run(shard, "touch", True, write)
        if result is None and precondition.is_conditional:
            raise precondition.failure()
        return result

    async def delete(self, key: str, precondition: Precondition) -> WriteResult | None:
        """Soft-delete; None when the key is not live (and the request was unconditional)."""
        route = self._write_route(key)
        shard = route.owner

        async def write() -> WriteResult | None:
            await _pull(route, key)
            deleted = await shard.writer().soft_delete(key, precondition.if_version)
            return WriteResult(None, read_after=await _read_after(shard)) if deleted else None

        result = await self._run(shard, "delete", True, write)
        if result is None and precondition.is_conditional:
            raise precondition.failure()
        return result

    def _write_route(self, key: str) -> Route:
        route = self.router.route(key)
        if route.writes_paused_by is not None:
            raise ShardUnavailable(route.owner.name, write_pause_detail(route.writes_paused_by))
        return route

    async def _run(self, shard: Shard, op: str, write: bool, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                result = await call()
        except TimeoutError:
            metrics.SHARD_ERRORS.labels(shard.name, "timeout").inc()
            detail = f"no answer within {self.request_timeout_s:g} s"
            raise ShardTimeout(shard.name, detail + ("; the write may have been applied" if write else "")) from None
        except ShardError as error:
            metrics.SHARD_ERRORS.labels(shard.name, type(error).__name__).inc()
            raise
        metrics.SHARD_QUERY_LATENCY.labels(shard.name, op).observe(time.perf_counter() - started)
        return result


async def _read_after(shard: Shard) -> str | None:
    """The token for reading a write just made, on shards whose reads may go to a replica."""
    if shard.replicas is None:
        return None
    return encode_read_after(shard.name, await shard.primary.replication_position())


async def _pull(route: Route, key: str) -> None:
    """Copy ``key``'s live row from the shard it is moving from, unless its new owner has a row."""
    if route.fallback is None:
        return
    rows = [row for row in await route.fallback.primary.fetch_rows([key]) if row.live]
    if rows:
        await route.owner.primary.import_rows(rows, overwrite=False)


async def _read_moving(route: Route, key: str) -> Row | None:
    """A moving key's row: the new owner's, whatever its state, else the old owner's."""
    assert route.fallback is not None
    found = await route.owner.primary.fetch_rows([key])
    if found:
        row = found[0]
        return Row.from_columns(row.ttl, row.version, row.value) if row.live else None
    return await route.fallback.primary.get(key)


async def _put(node: Node, key: str, value: bytes, ttl_ms: int | None, precondition: Precondition) -> tuple[Row, bool]:
    """``(row, created)``."""
    if precondition.require_absent:
        row = await node.create(key, value, ttl_ms)
        if row is None:
            raise precondition.failure()
        return row, True
    if precondition.is_conditional:
        row = await node.replace(key, value, ttl_ms, precondition.if_version)
        if row is None:
            raise precondition.failure()
        return row, False
    return await node.put(key, value, ttl_ms)
