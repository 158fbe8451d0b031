"""A small connection pool: a stack of idle connections, a size bound and a queue of waiters.

Why not the driver's pool: asyncpg's ``Pool.release`` goes through ``asyncio.shield`` (a task per
release) and its acquire through a queue and a holder object; measured on this machine an
acquire/release pair cost ~56 µs of CPU, more than half of a point query's own ~85 µs. Requests
here are single autocommit statements that leave no session state behind (see ``postgres.py``),
so a pool needs only this: hand out an open connection, take it back, never hand out a closed
one, and close everything within a bound at shutdown. It knows connections only through the four
functions it is given (``server.py`` passes a driver's primitives), so every driver shares it.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

C = TypeVar("C")


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        max_size: int,
        *,
        is_closed: Callable[[C], bool],
        close: Callable[[C], Awaitable[None]],
        terminate: Callable[[C], None],
    ) -> None:
        """``close`` ends a connection gracefully, ``terminate`` at once (both: with the server's session)."""
        self._connect = connect
        self._max_size = max_size
        self._is_closed = is_closed
        self._close = close
        self._terminate = terminate
        self._idle: list[C] = []
        self._size = 0  # open connections, idle or in use, plus those being opened
        self._waiters: deque[asyncio.Future[C | None]] = deque()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_use(self) -> int:
        return self._size - len(self._idle)

    async def fill(self, count: int) -> None:
        """Open ``count`` connections now (a pool's minimum size), so the first requests find them."""
        opened = [await self._open() for _ in range(min(count, self._max_size) - self._size)]
        for connection in opened:
            self.release(connection)

    async def acquire(self) -> C:
        while True:
            if self._closed:
                raise ConnectionError("the pool is closed")
            while self._idle:
                connection = self._idle.pop()
                if not self._is_closed(connection):
                    return connection
                self._size -= 1
            if self._size < self._max_size:
                return await self._open()
            waiter: asyncio.Future[C | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and (late := waiter.result()) is not None:
                    self.release(late)  # handed over just as the waiter gave up
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                raise
            if handed is not None:
                return handed
            # None: a connection was dropped, so there is room to open one: loop and take it

    def release(self, connection: C) -> None:
        """Take a connection back; a closed one (terminated after an error) just frees its place."""
        if self._is_closed(connection) or self._closed:
            self._size -= 1
            if self._closed and not self._is_closed(connection):
                self._terminate(connection)
            self._wake(None)
            return
        if not self._wake(connection):
            self._idle.append(connection)

    async def close(self, timeout_s: float) -> None:
        """Close idle connections gracefully, wait ``timeout_s`` for those in use, terminate the rest."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the pool is closed"))
        self._waiters.clear()
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(self._close(connection) for connection in idle), return_exceptions=True)
        for connection in idle:
            if not self._is_closed(connection):
                self._terminate(connection)

    async def _open(self) -> C:
        self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._wake(None)
            raise

    def _wake(self, connection: C | None) -> bool:
        """Hand ``connection`` (or the news that there is room, None) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False
