"""Natural batching per node: requests queue, and a free connection takes what is waiting.

::

    GET k1 ─┐                       ┌─► node.get_many([k1, k2, k3])     one statement
    GET k2 ─┼─► read lane queue ────┤   (at most ``max_runners`` at once per lane)
    GET k1 ─┘   (k1 looked up once) └─► …
    PUT k3 ───► write lane queue ───► node.put_many([…]) / delete_many([…]) / a conditional write alone

There is no timer: a request that finds its lane idle (nothing queued, a slot free) goes out at
once, alone, from its own task, as it would without batching; under load the slots are busy and
what arrives meanwhile queues, and runners take it as the next batch. A batch is one
statement, so driver and database work per key fall, and one durable commit carries many writes.

The rules that keep a batch as correct as single requests:

- Reads and writes have separate lanes (and connections), so GETs never queue behind fsyncs.
- A GET joins a lookup of the same key only while it has not been sent: joining one in flight
  could answer with a value older than a write that finished before the GET began.
- A key is in at most one write statement at a time, and its writes leave the queue in arrival
  order: a batch takes the first waiting write of each key whose earlier writes are done, so the
  same key twice is applied in order (201, then 200) across consecutive batches.
- Keys are sorted within a batch, so concurrent batches lock rows in one order (no deadlocks).
- A batch that fails with anything but a shard error (a row the database refuses) was rolled
  back whole, so each entry is re-run alone and only the bad one fails. A shard error (connection
  lost, timeout) is every entry's answer; for writes already sent its outcome is unknown.
- Each waiter has its own future; a waiter whose deadline passed is skipped if not yet sent.
"""

import asyncio
import functools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kvstore import metrics
from kvstore.backends.base import Node, Put, Row
from kvstore.errors import ShardError, ShardUnavailable
from kvstore.positions import position_after_write

T = TypeVar("T")
E = TypeVar("E")
Solo = Callable[[Node], Awaitable[Any]]


@dataclass(eq=False, slots=True)
class Attempt:
    """One write request's progress: whether its statement was sent (then its outcome may be
    unknown when its deadline passes; before that, it certainly did not happen)."""

    sent: bool = False


@dataclass(eq=False, slots=True)
class _Lookup:
    key: str
    waiters: list["asyncio.Future[Row | None]"] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Write:
    """A waiting write: an unconditional PUT or DELETE (batched with others of its kind), or any
    other write, run alone (``solo``: conditional writes, PATCH)."""

    key: str
    future: "asyncio.Future[tuple[Any, str | None]]"
    attempt: Attempt
    put: Put | None = None
    delete: bool = False
    solo: Solo | None = None

    @property
    def kind(self) -> str:
        return "put" if self.put is not None else "delete" if self.delete else "solo"

    @property
    def size(self) -> int:
        return 0 if self.put is None else len(self.put.value)


class _Lane(ABC, Generic[E]):
    """A queue of entries and at most ``max_runners`` tasks draining it, one batch at a time."""

    def __init__(self, node: Node, kind: str, max_runners: int, max_keys: int) -> None:
        self.node = node
        self._batch_sizes = metrics.BATCH_KEYS.labels(node.label, kind)
        self._max_runners = max_runners
        self._max_keys = max_keys
        self._queue: deque[E] = deque()
        self._runners: set[asyncio.Task[None]] = set()
        self._running = 0
        self._quiet = asyncio.Event()  # set while no statement of this lane runs or waits to
        self._quiet.set()

    def _idle(self) -> bool:
        """Nothing waits and a slot is free: a request may go out alone, now, in its own task."""
        return not self._queue and self._running < self._max_runners

    async def quiet(self) -> None:
        """Wait until no statement of this lane runs or waits to: a runner outlives the request
        that queued its statement when that request's deadline passes."""
        await self._quiet.wait()

    def _occupy(self) -> None:
        self._running += 1
        self._quiet.clear()
        self._batch_sizes.observe(1)

    def _vacate(self) -> None:
        """A slot fell free: start a runner for whatever queued meanwhile."""
        self._running -= 1
        if self._queue and self._running < self._max_runners:
            self._start_runner()
        elif not self._running:
            self._quiet.set()

    def _enqueue(self, entry: E) -> None:
        self._queue.append(entry)
        if self._running < self._max_runners:
            self._start_runner()

    def _enqueue_all(self, entries: list[E]) -> None:
        """Queue many entries at once (a client's batch): they leave as few statements as the
        batch size allows, on as many free slots as that takes."""
        self._queue.extend(entries)
        wanted = -(-len(entries) // self._max_keys)
        while wanted > 0 and self._running < self._max_runners:
            self._start_runner()
            wanted -= 1

    def _start_runner(self) -> None:
        self._running += 1  # counted here and uncounted as _drain returns, with no gap between
        self._quiet.clear()
        runner = asyncio.create_task(self._drain())
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _drain(self) -> None:
        try:
            while batch := self._take():
                self._batch_sizes.observe(len(batch))
                try:
                    await self._execute(batch)
                except BaseException as error:  # cancelled at close, or a bug: nobody may wait forever
                    self._fail(batch, error if isinstance(error, Exception) else _closing(self.node))
                    raise
        finally:
            self._running -= 1
            if not self._running:
                self._quiet.set()

    @abstractmethod
    def _take(self) -> list[E]:
        """The next batch, taken off the queue (empty when nothing may go now)."""

    @abstractmethod
    async def _execute(self, batch: list[E]) -> None:
        """Run one batch and answer every entry in it."""

    @abstractmethod
    def _fail(self, batch: Iterable[E], error: BaseException) -> None:
        """Answer every entry still waiting with ``error``."""

    async def close(self) -> None:
        """Stop the runners and fail whatever still waits (the node is about to close)."""
        for runner in list(self._runners):
            runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._fail(self._queue, _closing(self.node))
        self._queue.clear()


class ReadLane(_Lane[_Lookup]):
    def __init__(self, node: Node, max_runners: int, max_keys: int) -> None:
        super().__init__(node, "read", max_runners, max_keys)
        self._unsent: dict[str, _Lookup] = {}

    async def get(self, key: str) -> Row | None:
        if self._idle():
            self._occupy()
            try:
                return await self.node.get(key)
            finally:
                self._vacate()
        lookup = self._unsent.get(key)
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        if lookup is None:
            lookup = self._unsent[key] = _Lookup(key, [future])
            self._enqueue(lookup)
        else:
            lookup.waiters.append(future)
        return await future

    async def get_many(self, keys: Sequence[str]) -> dict[str, Row]:
        """The live rows of ``keys`` (a client's batch): queued together, so they go out as one
        statement per ``max_keys``, joining lookups of the same keys not yet sent."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Row | None]] = {}
        fresh: list[_Lookup] = []
        for key in keys:
            if key in futures:
                continue
            future = futures[key] = loop.create_future()
            lookup = self._unsent.get(key)
            if lookup is None:
                lookup = self._unsent[key] = _Lookup(key, [future])
                fresh.append(lookup)
            else:
                lookup.waiters.append(future)
        self._enqueue_all(fresh)
        rows = await asyncio.gather(*futures.values())
        return {key: row for key, row in zip(futures, rows, strict=True) if row is not None}

    def _take(self) -> list[_Lookup]:
        batch: list[_Lookup] = []
        while self._queue and len(batch) < self._max_keys:
            lookup = self._queue.popleft()
            del self._unsent[lookup.key]
            if not all(waiter.done() for waiter in lookup.waiters):  # else every waiter gave up
                batch.append(lookup)
        return batch

    async def _execute(self, batch: list[_Lookup]) -> None:
        try:
            found = await self.node.get_many(sorted(lookup.key for lookup in batch))
        except Exception as error:
            if isinstance(error, ShardError) or len(batch) == 1:
                self._fail(batch, error)
                return
            for lookup in batch:  # something in the batch was refused: find out which, alone
                await self._execute([lookup])
            return
        for lookup in batch:
            row = found.get(lookup.key)
            for waiter in lookup.waiters:
                if not waiter.done():
                    waiter.set_result(row)

    def _fail(self, batch: Iterable[_Lookup], error: BaseException) -> None:
        for lookup in batch:
            for waiter in lookup.waiters:
                if not waiter.done():
                    waiter.set_exception(error)


class WriteLane(_Lane[_Write]):
    """Writes in arrival order per key; after each batch, one replication position for all of it
    (the read-after token) on shards whose reads may go to replicas."""

    def __init__(self, node: Node, max_runners: int, max_keys: int, max_bytes: int, read_after: bool) -> None:
        super().__init__(node, "write", max_runners, max_keys)
        self._max_bytes = max_bytes
        self._read_after = read_after
        self._in_flight: set[str] = set()

    async def put(self, write: Put, attempt: Attempt) -> tuple[tuple[Row, bool], str | None]:
        if self._idle_for(write.key):
            return await self._now(write.key, attempt, functools.partial(_put_one, write))
        result: tuple[tuple[Row, bool], str | None] = await self._submit(_Write(write.key, _future(), attempt, write))
        return result

    async def delete(self, key: str, attempt: Attempt) -> tuple[bool, str | None]:
        """An unconditional soft delete: whether the key was live."""
        if self._idle_for(key):
            return await self._now(key, attempt, functools.partial(_delete_one, key))
        result: tuple[bool, str | None] = await self._submit(_Write(key, _future(), attempt, delete=True))
        return result

    async def put_many(self, writes: Sequence[Put], attempts: Sequence[Attempt]) -> list[Any]:
        """Unconditional PUTs of a client's batch, queued together (in each key's turn): per write,
        ``((row, created), position)`` or the exception it failed with."""
        entries = [
            _Write(write.key, _future(), attempt, write) for write, attempt in zip(writes, attempts, strict=True)
        ]
        self._enqueue_all(entries)
        results: list[Any] = await asyncio.gather(*(entry.future for entry in entries), return_exceptions=True)
        return results

    async def delete_many(self, keys: Sequence[str], attempts: Sequence[Attempt]) -> list[Any]:
        """Unconditional soft deletes of a client's batch: per key ``(was live, position)`` or an exception."""
        entries = [_Write(key, _future(), attempt, delete=True) for key, attempt in zip(keys, attempts, strict=True)]
        self._enqueue_all(entries)
        results: list[Any] = await asyncio.gather(*(entry.future for entry in entries), return_exceptions=True)
        return results

    async def run(self, key: str, attempt: Attempt, call: Callable[[Node], Awaitable[T]]) -> tuple[T, str | None]:
        """``call(node)`` alone, in ``key``'s turn: after the writes to ``key`` queued before it."""
        if self._idle_for(key):
            return await self._now(key, attempt, call)
        result: tuple[T, str | None] = await self._submit(_Write(key, _future(), attempt, solo=call))
        return result

    def _idle_for(self, key: str) -> bool:
        return self._idle() and key not in self._in_flight

    async def _now(self, key: str, attempt: Attempt, call: Callable[[Node], Awaitable[T]]) -> tuple[T, str | None]:
        """One write alone, in the caller's task (so its deadline cancels only its own statement)."""
        self._occupy()
        self._in_flight.add(key)
        attempt.sent = True
        try:
            result = await call(self.node)
            return result, await self._position()
        finally:
            self._in_flight.discard(key)
            self._vacate()

    async def _position(self) -> str | None:
        return await position_after_write(self.node.replication_position) if self._read_after else None

    async def _submit(self, write: _Write) -> tuple[Any, str | None]:
        self._enqueue(write)
        return await write.future

    def _take(self) -> list[_Write]:
        batch: list[_Write] = []
        blocked = set(self._in_flight)  # keys whose earlier writes are running or left waiting
        left: list[_Write] = []
        size = 0
        while self._queue and len(batch) < self._max_keys and size < self._max_bytes:
            write = self._queue.popleft()
            if write.future.done():  # its deadline passed before it was sent
                continue
            mixes = batch and (write.kind != batch[0].kind or write.solo is not None)
            if write.key in blocked or mixes:
                blocked.add(write.key)
                left.append(write)
                continue
            blocked.add(write.key)
            batch.append(write)
            size += write.size
            if write.solo is not None:
                break
        self._queue.extendleft(reversed(left))
        for write in batch:
            write.attempt.sent = True
            self._in_flight.add(write.key)
        return batch

    async def _execute(self, batch: list[_Write]) -> None:
        try:
            await self._apply(batch)
        finally:
            self._in_flight.difference_update(write.key for write in batch)

    async def _apply(self, batch: list[_Write]) -> None:
        solo = batch[0].solo
        try:
            if solo is not None:
                results: list[Any] = [await solo(self.node)]
            elif batch[0].delete:
                batch.sort(key=lambda write: write.key)
                deleted = await self.node.delete_many([write.key for write in batch])
                results = [write.key in deleted for write in batch]
            else:
                batch.sort(key=lambda write: write.key)
                results = list(await self.node.put_many([write.put for write in batch if write.put is not None]))
            position = await self._position()
        except Exception as error:
            if isinstance(error, ShardError) or len(batch) == 1:
                self._fail(batch, error)
                return
            for write in batch:  # the statement was rolled back whole: re-run each alone
                await self._apply([write])
            return
        for write, result in zip(batch, results, strict=True):
            if not write.future.done():
                write.future.set_result((result, position))

    def _fail(self, batch: Iterable[_Write], error: BaseException) -> None:
        for write in batch:
            if not write.future.done():
                write.future.set_exception(error)


async def _put_one(write: Put, node: Node) -> tuple[Row, bool]:
    return await node.put(write.key, write.value, write.ttl_ms)


async def _delete_one(key: str, node: Node) -> bool:
    return await node.soft_delete(key, None)


def _future() -> "asyncio.Future[tuple[Any, str | None]]":
    return asyncio.get_running_loop().create_future()


def _closing(node: Node) -> ShardError:
    return node.failure(ShardUnavailable, "closing")
