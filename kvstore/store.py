"""The key-value operations as the API promises them, over the router's shards.

This layer turns one client operation into the node calls that implement it atomically,
applies the per-request deadline, and records per-shard latency and errors. It knows
nothing of HTTP and nothing of SQL.

Conditional writes map to one conditional statement each; an unconditional PUT is the
backend's upsert (``Node.put``); an increment is ``Node.incr``. The multi-key operations build on
the same node calls: a listing is ``listing.py``'s pages, a batch groups its ops per shard and kind
into one statement each, and a transaction runs its ops in one database transaction on one shard.

During a migration a key whose owner changes follows the moving-key rules (``moving.py``).

Every operation runs routed by one ring epoch (``Router.routing``). When a shard refuses that
epoch (``StaleRing``: the shard's ring record moved on, nothing was applied), the operation follows
the ring record and is routed again, inside the same request deadline; the client never sees the
refusal while the deadline allows another attempt.
"""

import asyncio
import contextvars
import functools
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from kvstore import listing, metrics, moving
from kvstore.backends.base import INTEGER_PATTERN, Node, Put, Row
from kvstore.batching import Attempt
from kvstore.conditions import Precondition
from kvstore.errors import (
    Conflict,
    CrossShard,
    PreconditionFailed,
    ShardError,
    ShardTimeout,
    ShardUnavailable,
    StaleRing,
    WriteOutcomeUnknown,
)
from kvstore.listing import ListQuery, Page
from kvstore.operations import Compare, DeleteOp, GetOp, IncrOp, Op, OpFailed, Outcome, PutOp, TxnResult, is_write
from kvstore.positions import encode_read_after, position_for, positions_by_shard
from kvstore.router import Route, Router
from kvstore.shard import Shard
from kvstore.topology import write_pause_detail

T = TypeVar("T")
P = ParamSpec("P")
_INTEGER = re.compile(INTEGER_PATTERN.encode())
# After a refusal that a refresh did not explain (a shard still being given the new record, or
# one that has it before this front end reads it), wait this long, doubling, before routing again.
_REROUTE_PAUSE_S = 0.005
_REROUTE_PAUSE_MAX_S = 0.2
# The request's deadline (event loop time), set by ``_rerouted`` for every attempt it makes.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("kvstore_request_deadline")


def _rerouted(
    method: "Callable[Concatenate[KeyValueStore, P], Coroutine[Any, Any, T]]",
) -> "Callable[Concatenate[KeyValueStore, P], Coroutine[Any, Any, T]]":
    """Run a store operation routed by one ring epoch, and again by the newer ring when a shard
    refuses that epoch, until the request deadline."""

    async def run(self: "KeyValueStore", /, *args: P.args, **kwargs: P.kwargs) -> T:
        token = _deadline.set(asyncio.get_running_loop().time() + self.request_timeout_s)
        try:
            reroute = None
            while True:
                try:
                    async with self.router.routing():
                        return await method(self, *args, **kwargs)
                except StaleRing as refusal:
                    reroute = reroute or _Reroute(self.router)
                    await reroute.after(refusal)
        finally:
            _deadline.reset(token)

    functools.update_wrapper(run, method)
    return run


class _Reroute:
    """What to do between a refused attempt and the next: follow the ring record, and pause when
    that did not change the epoch."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.pause_s = _REROUTE_PAUSE_S

    async def after(self, refusal: StaleRing) -> None:
        metrics.RING_REFUSALS.labels(refusal.shard).inc()
        epoch = self.router.topology.epoch
        try:
            async with asyncio.timeout_at(_deadline.get()):
                await self.router.refresh_once()
                if self.router.topology.epoch == epoch:
                    await asyncio.sleep(self.pause_s)
                    self.pause_s = min(self.pause_s * 2, _REROUTE_PAUSE_MAX_S)
        except TimeoutError:
            raise ShardTimeout(refusal.shard, f"the ring kept changing until the deadline ({refusal.detail})") from None


@dataclass(frozen=True, slots=True)
class WriteResult:
    row: Row | None  # the row the write left (None after a delete)
    created: bool = False
    read_after: str | None = None  # token for reading this write from a replica (shards with replicas)


class KeyValueStore:
    def __init__(self, router: Router, request_timeout_s: float) -> None:
        self.router = router
        self.request_timeout_s = request_timeout_s

    @_rerouted
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
            position = position_for(shard.name, read_after)
            strong = strong or position is None

        async def read() -> Row | None:
            try:
                return await shard.read(key, strong=strong, after_position=position)
            except ShardUnavailable:
                metrics.SHARD_ERRORS.labels(shard.name, "retried_read").inc()
                return await shard.read(key, strong=True, after_position=None)

        return await self._run(shard, "get", None, read)

    @_rerouted
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

    @_rerouted
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

    @_rerouted
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

    @_rerouted
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

    @_rerouted
    async def list_keys(self, query: ListQuery, *, strong: bool = False, read_after: str | None = None) -> Page:
        """One page of keys in byte order (``listing.py``), read like GET: from replicas unless
        ``strong``, and with ``read_after`` from nodes that have replayed that write."""
        topology = self.router.topology
        positions = None if read_after is None else positions_by_shard(read_after)
        shards = self.router.shards
        call = functools.partial(listing.list_page, topology, shards, query, strong=strong, read_after=positions)
        return await self._within_deadline(",".join(topology.ring.names), None, call)

    async def batch(self, ops: Sequence[Op], *, strong: bool = False, read_after: str | None = None) -> list[Outcome]:
        """Each op as its single-key request would run, answered one by one; not atomic across ops.

        Ops on the same key apply in their order: the batch runs in rounds, the n-th op on each key
        in round n (one round when the keys are distinct). Within a round the ops are grouped per
        shard and kind: the GETs of a node are one statement, the unconditional PUTs one multi-row
        upsert, the unconditional DELETEs one statement (per ``batch_max_keys``); a conditional
        write or an increment is its own statement, as it is alone. The batch shares one request
        deadline; an op it did not reach fails alone, and a shard that fails fails only its ops.
        The ops a shard refused as routed by a stale ring epoch are routed again by the new one.
        """
        positions = None if read_after is None else positions_by_shard(read_after)
        outcomes: list[Outcome | None] = [None] * len(ops)
        attempts = [Attempt() for _ in ops]
        token = _deadline.set(asyncio.get_running_loop().time() + self.request_timeout_s)
        try:
            async with asyncio.timeout_at(_deadline.get()):
                reroute = _Reroute(self.router)
                for indices in _rounds(ops):
                    while indices:
                        async with self.router.routing():
                            await self._batch_round(ops, indices, outcomes, attempts, strong, positions)
                        indices, refusal = _take_refused(indices, outcomes, attempts)
                        if refusal is not None:
                            await reroute.after(refusal)
        except TimeoutError:
            for index, outcome in enumerate(outcomes):
                if outcome is None:
                    shard = self.router.topology.place(ops[index].key).owner
                    attempt = attempts[index] if is_write(ops[index]) else None
                    outcomes[index] = Outcome(error=self._deadline_passed(shard, attempt))
        except ShardTimeout as error:  # the ring kept changing: what is left fails with that
            for index, outcome in enumerate(outcomes):
                if outcome is None:
                    outcomes[index] = Outcome(error=error)
        finally:
            _deadline.reset(token)
        return [outcome for outcome in outcomes if outcome is not None]

    @_rerouted
    async def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> TxnResult:
        """etcd's transaction: if every compare holds, the success ops, else the failure ops, in
        one database transaction on the one shard that holds every key named. The compared keys
        are locked first (``Node.lock_rows``), so nothing changes them between the compare and
        the ops. An op that fails (a precondition, a counter) rolls everything back (OpFailed)."""
        keys = [compare.key for compare in compares] + [op.key for op in (*success, *failure)]
        routes = {key: self.router.route(key) for key in keys}
        owners: dict[str, list[str]] = defaultdict(list)
        for key, route in routes.items():
            owners[route.owner.name].append(key)
        if len(owners) > 1:
            raise CrossShard(owners)
        shard = next(iter(routes.values())).owner
        writes = {op.key for op in (*success, *failure) if is_write(op)}
        for key in writes:
            if (paused := routes[key].writes_paused_by) is not None:
                raise ShardUnavailable(shard.name, write_pause_detail(paused))
        attempt = Attempt()

        async def run() -> TxnResult:
            sources: dict[str, list[str]] = defaultdict(list)  # moving keys by the shard they come from
            for key, route in routes.items():
                if route.fallback is not None:
                    sources[route.fallback.name].append(key)
            for source, moving_keys in sources.items():
                await moving.pull(shard.primary, self.router.shards[source].primary, moving_keys)
            attempt.sent = True
            async with shard.primary.transaction() as tx:
                locked = {row.key: row for row in await tx.lock_rows([compare.key for compare in compares])}
                succeeded = all(compare.holds(locked.get(compare.key)) for compare in compares)
                branch, ops = ("success", success) if succeeded else ("failure", failure)
                outcomes = []
                for index, op in enumerate(ops):
                    try:
                        outcomes.append(await apply(tx, op))
                    except (PreconditionFailed, Conflict) as error:
                        raise OpFailed(branch, index, op, error) from None
            token = _token(shard, await shard.position()) if any(is_write(op) for op in ops) else None
            return TxnResult(succeeded, [replace(outcome, read_after=token) for outcome in outcomes])

        return await self._run(shard, "txn", attempt, run)

    async def _batch_round(
        self,
        ops: Sequence[Op],
        indices: list[int],
        outcomes: list[Outcome | None],
        attempts: list[Attempt],
        strong: bool,
        positions: Mapping[str, str] | None,
    ) -> None:
        # By shard name (a Shard is mutable, hence not hashable): (kind, owner, source) and (owner, source).
        groups: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
        solos: list[tuple[int, Route]] = []
        pulls: dict[tuple[str, str], list[int]] = defaultdict(list)
        shards = self.router.shards
        for index in indices:
            op, route = ops[index], self.router.route(ops[index].key)
            if isinstance(op, GetOp):
                groups["get", route.owner.name, None if route.fallback is None else route.fallback.name].append(index)
                continue
            if route.writes_paused_by is not None:
                detail = write_pause_detail(route.writes_paused_by)
                outcomes[index] = Outcome(error=ShardUnavailable(route.owner.name, detail))
                continue
            if route.fallback is not None:
                pulls[route.owner.name, route.fallback.name].append(index)
            if isinstance(op, PutOp | DeleteOp) and not op.precondition.is_conditional:
                groups["put" if isinstance(op, PutOp) else "delete", route.owner.name, None].append(index)
            else:
                solos.append((index, route))

        async def pull(owner: str, source: str, members: list[int]) -> None:
            try:
                await moving.pull(shards[owner].primary, shards[source].primary, [ops[index].key for index in members])
            except Exception as error:
                for index in members:
                    outcomes[index] = Outcome(error=error)

        await asyncio.gather(*(pull(owner, source, members) for (owner, source), members in pulls.items()))

        async def group(kind: str, name: str, source_name: str | None, members: list[int]) -> None:
            members = [index for index in members if outcomes[index] is None]  # a failed pull fails its writes
            if not members:
                return
            shard, source = shards[name], None if source_name is None else shards[source_name]
            keys = [ops[index].key for index in members]
            started = time.perf_counter()
            try:
                if kind == "get":
                    await self._batch_get(shard, source, keys, members, outcomes, strong, positions)
                elif kind == "put":
                    puts = [
                        Put(op.key, op.value, op.ttl_ms) for index in members if isinstance(op := ops[index], PutOp)
                    ]
                    answers = await shard.put_many(puts, [attempts[index] for index in members])
                    for index, answer in zip(members, answers, strict=True):
                        outcomes[index] = _answered(answer, shard, lambda result: Outcome(result[0], created=result[1]))
                else:
                    answers = await shard.delete_many(keys, [attempts[index] for index in members])
                    for index, answer in zip(members, answers, strict=True):
                        outcomes[index] = _answered(answer, shard, lambda deleted: Outcome(found=deleted))
            except Exception as error:
                for index in members:
                    outcomes[index] = Outcome(error=error)
            metrics.record_shard_query(shard.name, f"batch_{kind}", time.perf_counter() - started)

        async def solo(index: int, route: Route) -> None:
            if outcomes[index] is not None:
                return
            try:
                outcomes[index] = await _write_one(ops[index], route.owner, attempts[index])
            except Exception as error:
                outcomes[index] = Outcome(error=error)

        await asyncio.gather(
            *(group(kind, shard, source, members) for (kind, shard, source), members in groups.items()),
            *(solo(index, route) for index, route in solos),
        )

    async def _batch_get(
        self,
        shard: Shard,
        source: Shard | None,
        keys: list[str],
        members: list[int],
        outcomes: list[Outcome | None],
        strong: bool,
        positions: Mapping[str, str] | None,
    ) -> None:
        if source is not None:
            rows = await moving.read(shard.primary, source.primary, keys)
        else:
            position = None if positions is None else positions.get(shard.name)
            strong = strong or (positions is not None and position is None)
            rows = await shard.read_many(keys, strong=strong, after_position=position)
        for index, key in zip(members, keys, strict=True):
            row = rows.get(key)
            outcomes[index] = Outcome(row, found=row is not None)

    def _deadline_at(self) -> float:
        """The current request's deadline (event loop time)."""
        deadline = _deadline.get(None)
        return asyncio.get_running_loop().time() + self.request_timeout_s if deadline is None else deadline

    def _deadline_passed(self, shard: str, attempt: Attempt | None) -> ShardError:
        """A write whose statement was sent may have been applied: its outcome is unknown."""
        detail = f"no answer within {self.request_timeout_s:g} s"
        if attempt is not None and attempt.sent:
            return WriteOutcomeUnknown(shard, detail + "; the write may have been applied")
        if attempt is not None:
            detail += "; the write was not applied"
        return ShardTimeout(shard, detail)

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
            async with asyncio.timeout_at(self._deadline_at()):
                return await call()
        except TimeoutError:
            raise self._deadline_passed(shards, attempt) from None


def _take_refused(
    indices: list[int], outcomes: list[Outcome | None], attempts: list[Attempt]
) -> tuple[list[int], StaleRing | None]:
    """The ops of ``indices`` a shard refused as routed by a stale epoch, made pending again (nothing
    of them was applied: their next attempt starts unsent), and one of the refusals."""
    refused, refusal = [], None
    for index in indices:
        outcome = outcomes[index]
        if outcome is not None and isinstance(outcome.error, StaleRing):
            refused.append(index)
            refusal = outcome.error
            outcomes[index] = None
            attempts[index] = Attempt()
    return refused, refusal


def _rounds(ops: Sequence[Op]) -> list[list[int]]:
    """Op indices by round: the n-th op on each key goes in round n."""
    seen: dict[str, int] = defaultdict(int)
    rounds: list[list[int]] = []
    for index, op in enumerate(ops):
        turn = seen[op.key]
        seen[op.key] += 1
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append(index)
    return rounds


def _answered(answer: Any, shard: Shard, outcome: Callable[[Any], Outcome]) -> Outcome:
    """A lane's answer for one write of a batch: ``(result, position)``, or the exception."""
    if isinstance(answer, BaseException):
        return Outcome(error=answer if isinstance(answer, Exception) else ShardUnavailable(shard.name, "cancelled"))
    result, position = answer
    return replace(outcome(result), read_after=_token(shard, position))


async def _write_one(op: Op, shard: Shard, attempt: Attempt) -> Outcome:
    """A batch's write that is its own statement (conditional, or an increment), in its key's turn."""
    outcome, position = await shard.write(op.key, attempt, functools.partial(apply, op=op))
    return replace(outcome, read_after=_token(shard, position))


async def apply(node: Node, op: Op) -> Outcome:
    """One op on ``node`` as its single-key request runs it; raises PreconditionFailed or Conflict."""
    if isinstance(op, GetOp):
        row = await node.get(op.key)
        return Outcome(row, found=row is not None)
    if isinstance(op, IncrOp):
        return Outcome(await increment(node, key=op.key, by=op.by))
    if isinstance(op, PutOp):
        if not op.precondition.is_conditional:
            row, created = await node.put(op.key, op.value, op.ttl_ms)
        else:
            row, created = await _put_conditionally(
                node, key=op.key, value=op.value, ttl_ms=op.ttl_ms, when=op.precondition
            )
        return Outcome(row, created=created)
    deleted = await _soft_delete(node, key=op.key, if_version=op.precondition.if_version)
    if not deleted and op.precondition.is_conditional:
        raise op.precondition.failure()
    return Outcome(found=deleted)


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
