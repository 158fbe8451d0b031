"""The key-value operations as the API promises them, over the router's shards.

This layer turns one client operation into the node calls that implement it atomically,
applies the per-request deadline, and records per-shard latency and errors. It knows
nothing of HTTP and nothing of SQL.

An unconditional PUT is "replace the live row, else create one": each step is a single
atomic statement, and if a concurrent writer changes the key between the two (the create
finds a live row after the replace found none) the pair is tried again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kvstore import metrics
from kvstore.backends.base import Node, Row
from kvstore.conditions import Precondition
from kvstore.errors import PreconditionFailed, ShardError, ShardTimeout, ShardUnavailable
from kvstore.router import Router
from kvstore.shard import Shard

T = TypeVar("T")
_PUT_ATTEMPTS = 16


@dataclass(frozen=True, slots=True)
class WriteResult:
    row: Row
    created: bool


class KeyValueStore:
    def __init__(self, router: Router, request_timeout_s: float) -> None:
        self.router = router
        self.request_timeout_s = request_timeout_s

    async def get(self, key: str) -> Row | None:
        """Read a key; a read whose connection broke is retried once (it is idempotent)."""
        shard = self.router.shard_for(key)

        async def read() -> Row | None:
            try:
                return await shard.reader().get(key)
            except ShardUnavailable:
                metrics.SHARD_ERRORS.labels(shard.name, "retried_read").inc()
                return await shard.reader().get(key)

        return await self._run(shard, "get", False, read)

    async def put(self, key: str, value: bytes, ttl_ms: int | None, precondition: Precondition) -> WriteResult:
        shard = self.router.shard_for(key)
        return await self._run(shard, "put", True, lambda: _put(shard.writer(), key, value, ttl_ms, precondition))

    async def touch(self, key: str, ttl_ms: int | None, precondition: Precondition) -> Row | None:
        """Change the expiry; None when the key is not live (and the request was unconditional)."""
        shard = self.router.shard_for(key)
        row = await self._run(shard, "touch", True, lambda: shard.writer().touch(key, ttl_ms, precondition.if_version))
        if row is None and precondition.is_conditional:
            raise PreconditionFailed("the key's current version does not match If-Match")
        return row

    async def delete(self, key: str, precondition: Precondition) -> bool:
        """Soft-delete; False when the key is not live (and the request was unconditional)."""
        shard = self.router.shard_for(key)
        deleted = await self._run(
            shard, "delete", True, lambda: shard.writer().soft_delete(key, precondition.if_version)
        )
        if not deleted and precondition.is_conditional:
            raise PreconditionFailed("the key's current version does not match If-Match")
        return deleted

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


async def _put(node: Node, key: str, value: bytes, ttl_ms: int | None, precondition: Precondition) -> WriteResult:
    if precondition.require_absent:
        row = await node.create(key, value, ttl_ms)
        if row is None:
            raise PreconditionFailed("the key exists (If-None-Match: *)")
        return WriteResult(row, created=True)
    if precondition.is_conditional:
        row = await node.replace(key, value, ttl_ms, precondition.if_version)
        if row is None:
            raise PreconditionFailed("the key's current version does not match If-Match")
        return WriteResult(row, created=False)
    for _ in range(_PUT_ATTEMPTS):
        row = await node.replace(key, value, ttl_ms, None)
        if row is not None:
            return WriteResult(row, created=False)
        row = await node.create(key, value, ttl_ms)
        if row is not None:
            return WriteResult(row, created=True)
    raise ShardTimeout(node.shard, "the key changed under every attempt to write it; try again")
