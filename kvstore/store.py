"""The key-value operations as the API promises them, over the router's shards.

This layer turns one client operation into the node calls that implement it atomically,
applies the per-request deadline, and records per-shard latency and errors. It knows
nothing of HTTP and nothing of SQL.

Conditional writes map to one conditional statement each; an unconditional PUT is the
backend's upsert (``Node.put``).

During a migration a key whose owner changes follows the moving-key rules (``moving.py``).
"""

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kvstore import listing, metrics, moving
from kvstore.backends.base import INTEGER_PATTERN, Node, Put, Row
from kvstore.batching import Attempt
from kvstore.conditions import Precondition
from kvstore.errors import Conflict, ShardError, ShardTimeout, ShardUnavailable
from kvstore.listing import ListQuery, Page
from kvstore.positions import decode_read_after, encode_read_after
from kvstore.router import Route, Router
from kvstore.shard import Shard
from kvstore.topology import write_pause_detail

T = TypeVar("T")
_INTEGER = re.compile(INTEGER_PATTERN.encode())


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
            return await self._run(shard, "get", None, lambda: _read_moving(route, key))
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

        return await self._run(shard, "get", None, read)

    async def put(self, key: str, value: bytes, ttl_ms: int | None, precondition: Precondition) -> WriteResult:
        route = self._write_route(key)
        shard = route.owner
        attempt = Attempt()

        async def write() -> WriteResult:
            await _pull(route, key)
            if not precondition.is_conditional:
                row, created, position = await shard.put(Put(key, value, ttl_ms), attempt)
                return WriteResult(row, created, _token(shard, position))
            conditional = functools.partial(_put_conditionally, key=key, value=value, ttl_ms=ttl_ms, when=precondition)
            (row, created), position = await shard.write(key, attempt, conditional)
            return WriteResult(row, created, _token(shard, position))

        return await self._run(shard, "put", attempt, write)

    async def touch(self, key: str, ttl_ms: int | None, precondition: Precondition) -> WriteResult | None:
        """Change the expiry; None when the key is not live (and the request was unconditional)."""
        route = self._write_route(key)
        shard = route.owner
        attempt = Attempt()

        async def write() -> WriteResult | None:
            await _pull(route, key)
            change = functools.partial(_touch, key=key, ttl_ms=ttl_ms, if_version=precondition.if_version)
            row, position = await shard.write(key, attempt, change)
            return None if row is None else WriteResult(row, read_after=_token(shard, position))

        result = await self._run(shard, "touch", attempt, write)
        if result is None and precondition.is_conditional:
            raise precondition.failure()
        return result

    async def incr(self, key: str, by: int) -> WriteResult:
        """Add ``by`` to a counter (``Node.incr``): the row with its new value. Raises Conflict when
        the live value is not a decimal integer or the sum would overflow."""
        route = self._write_route(key)
        shard = route.owner
        attempt = Attempt()

        async def write() -> WriteResult:
            await _pull(route, key)
            row, position = await shard.write(key, attempt, functools.partial(increment, key=key, by=by))
            return WriteResult(row, read_after=_token(shard, position))

        return await self._run(shard, "incr", attempt, write)

    async def delete(self, key: str, precondition: Precondition) -> WriteResult | None:
        """Soft-delete; None when the key is not live (and the request was unconditional)."""
        route = self._write_route(key)
        shard = route.owner
        attempt = Attempt()

        async def write() -> WriteResult | None:
            await _pull(route, key)
            if precondition.is_conditional:
                change = functools.partial(_soft_delete, key=key, if_version=precondition.if_version)
                deleted, position = await shard.write(key, attempt, change)
            else:
                deleted, position = await shard.delete(key, attempt)
            return WriteResult(None, read_after=_token(shard, position)) if deleted else None

        result = await self._run(shard, "delete", attempt, write)
        if result is None and precondition.is_conditional:
            raise precondition.failure()
        return result

    def _write_route(self, key: str) -> Route:
        route = self.router.route(key)
        if route.writes_paused_by is not None:
            raise ShardUnavailable(route.owner.name, write_pause_detail(route.writes_paused_by))
        return route

    async def list(self, query: ListQuery, *, strong: bool = False, read_after: str | None = None) -> Page:
        """One page of keys in byte order (``listing.py``), read like GET: from replicas unless
        ``strong``, and with ``read_after`` from nodes that have replayed that write."""
        topology = self.router.routing_topology()
        token = None if read_after is None else decode_read_after(read_after)
        shards = self.router.shards
        call = functools.partial(listing.list_page, topology, shards, query, strong=strong, read_after=token)
        return await self._within_deadline(",".join(topology.ring.names), None, call)

    async def _run(self, shard: Shard, op: str, attempt: Attempt | None, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` within the request deadline, with the shard's query metrics."""
        started = time.perf_counter()
        try:
            result = await self._within_deadline(shard.name, attempt, call)
        except ShardError as error:
            metrics.SHARD_ERRORS.labels(shard.name, type(error).__name__).inc()
            raise
        metrics.record_shard_query(shard.name, op, time.perf_counter() - started)
        return result

    async def _within_deadline(self, shards: str, attempt: Attempt | None, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` within the request deadline; ``attempt`` is a write's (None for reads): past the
        deadline its outcome is unknown only if its statement was sent."""
        try:
            async with asyncio.timeout(self.request_timeout_s):
                return await call()
        except TimeoutError:
            detail = f"no answer within {self.request_timeout_s:g} s"
            if attempt is not None:
                detail += "; the write may have been applied" if attempt.sent else "; the write was not applied"
            raise ShardTimeout(shards, detail) from None


def _token(shard: Shard, position: str | None) -> str | None:
    """The read-after token for a write at ``position`` (shards with replicas report one)."""
    return None if position is None else encode_read_after(shard.name, position)


async def _pull(route: Route, key: str) -> None:
    if route.fallback is not None:
        await moving.pull(route.owner.primary, route.fallback.primary, [key])


async def _read_moving(route: Route, key: str) -> Row | None:
    assert route.fallback is not None
    return (await moving.read(route.owner.primary, route.fallback.primary, [key])).get(key)


async def increment(node: Node, *, key: str, by: int) -> Row:
    """``Node.incr``, with a Conflict that says why when the value cannot be incremented."""
    row = await node.incr(key, by)
    if row is not None:
        return row
    current = await node.get(key)
    value = b"" if current is None or current.value is None else current.value
    if _INTEGER.fullmatch(value):
        raise Conflict(f"adding {by} to {value.decode()} would leave the signed 64-bit range")
    raise Conflict("the value is not a decimal integer (as Redis INCR takes it: digits, optional '-', no spaces)")


async def _touch(node: Node, *, key: str, ttl_ms: int | None, if_version: int | None) -> Row | None:
    return await node.touch(key, ttl_ms, if_version)


async def _soft_delete(node: Node, *, key: str, if_version: int | None) -> bool:
    return await node.soft_delete(key, if_version)


async def _put_conditionally(
    node: Node, *, key: str, value: bytes, ttl_ms: int | None, when: Precondition
) -> tuple[Row, bool]:
    """A PUT with ``If-None-Match: *`` or ``If-Match``: one conditional statement, ``(row, created)``."""
    if when.require_absent:
        row = await node.create(key, value, ttl_ms)
        if row is None:
            raise when.failure()
        return row, True
    row = await node.replace(key, value, ttl_ms, when.if_version)
    if row is None:
        raise when.failure()
    return row, False
