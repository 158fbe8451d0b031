"""The connection-and-error core of every node on a database server (PostgreSQL, MySQL), written once.

A driver module supplies primitives — open one connection with its session settings, tell a
connection that is closed or left in a transaction, close or terminate one, read one value, and its
error map — and this core does the rest, the same way for every engine::

    request ──> _connection(write) ──> ConnectionPool (pool.py) ──> driver connection
    sweeper ──> _connection(background=True) ──> its own connection, one statement at a time
    sweeper lock ──> a session of its own, kept between bursts

- "cannot connect" when a connection cannot be opened, naming the node;
- a connection a failure left in an unknown state (cancelled by the deadline, broken mid-protocol,
  refused by a server going away) is terminated, never handed out again; one the server merely
  refused a statement on is kept, where the driver says the session is still in a known state;
- a connection still in a transaction is never handed on;
- close within a bound: the pool closes gracefully, then terminates.
"""

import asyncio
import contextlib
import copy
from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

from kvstore.backends.base import SweeperLock
from kvstore.backends.pool import ConnectionPool
from kvstore.backends.sql import Params, PoolSettings, SqlNode
from kvstore.errors import ShardUnavailable, describe

C = TypeVar("C")


class ServerNode(SqlNode, Generic[C]):
    """A ``SqlNode`` on a database server reached through connections of type ``C``."""

    driver_errors: ClassVar[tuple[type[BaseException], ...]]
    """What the driver raises when it cannot reach or talk to the server (connecting included)."""
    sweeper_lock_statements: ClassVar[tuple[str, str]]
    """Take the sweeper lock without waiting (one value: 1 or true when taken) and give it back."""
    lock_params: Params = ()
    """What fills ``sweeper_lock_statements``: the lock's key or name."""

    def __init__(self, shard: str, role: str, dsn: str, pool: PoolSettings) -> None:
        super().__init__(shard, role)
        self._dsn = dsn
        self._settings = pool
        self._pool: ConnectionPool[C] | None = None
        # The sweeper's own connection: its work never waits behind requests for a pooled one.
        self._background: C | None = None
        self._background_turn = asyncio.Lock()
        self._sweeper_lock = _SessionLock(self)

    # -- what a driver supplies ------------------------------------------------

    @abstractmethod
    async def _connect(self) -> C:
        """Open one connection with the node's session settings (statement timeout, time zone, …)."""

    @abstractmethod
    def _is_closed(self, connection: C) -> bool:
        """Whether the connection is closed, or its server has closed it (it must not be handed out)."""

    @abstractmethod
    def _in_transaction(self, connection: C) -> bool:
        """Whether the connection is inside a transaction (it must not be handed on)."""

    @abstractmethod
    async def _close_connection(self, connection: C) -> None:
        """Close gracefully (tell the server)."""

    @abstractmethod
    def _terminate(self, connection: C) -> None:
        """Close at once, without a round trip; never raises."""

    @abstractmethod
    async def _execute(self, connection: C, sql: str) -> None:
        """Run a statement that returns nothing (BEGIN, COMMIT, ROLLBACK)."""

    @abstractmethod
    async def _fetch_value(self, connection: C, sql: str, params: Params) -> Any:
        """The first column of the first row of a read (the sweeper lock's statements)."""

    @abstractmethod
    def _map_error(self, error: BaseException, write: bool) -> BaseException:
        """The driver's error map: our ``ShardError`` for ``error``, or ``error`` itself to re-raise as is."""

    def _keeps_connection(self, error: BaseException) -> bool:
        """Whether the session is still in a known state after ``error`` (the server refused a statement)."""
        return False

    # -- the core ----------------------------------------------------------------

    async def open(self) -> None:
        pool: ConnectionPool[C] = ConnectionPool(
            self._connect,
            self._settings.max_size,
            is_closed=self._is_closed,
            close=self._close_connection,
            terminate=self._terminate,
        )
        try:
            await pool.fill(self._settings.min_size)
        except self.driver_errors as error:
            await pool.close(0)
            raise self.cannot_connect(error) from None
        self._pool = pool

    async def close(self, timeout_s: float) -> None:
        await self._sweeper_lock.close()
        if self._background is not None:
            self._terminate(self._background)
            self._background = None
        if self._pool is not None:
            await self._pool.close(timeout_s)

    def connections_in_use(self) -> int:
        return 0 if self._pool is None else self._pool.in_use

    def sweeper_lock(self) -> SweeperLock:
        return self._sweeper_lock

    def cannot_connect(self, error: BaseException) -> ShardUnavailable:
        return self.failure(ShardUnavailable, f"cannot connect: {describe(error)}")

    _pinned: C | None = None  # set on the node ``transaction`` hands out: every statement runs on it

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["ServerNode[C]"]:
        async with self._connection(write=True) as connection:
            await self._execute(connection, self.dialect.begin)
            bound = copy.copy(self)
            bound._pinned = connection
            try:
                yield bound
            except BaseException:
                if not self._is_closed(connection):
                    with contextlib.suppress(*self.driver_errors):
                        await self._execute(connection, "ROLLBACK")
                raise
            await self._execute(connection, "COMMIT")

    @asynccontextmanager
    async def _connection(self, write: bool, background: bool = False) -> AsyncIterator[C]:
        """A connection for one operation; the driver's errors leave it as our exception tree."""
        if self._pinned is not None:  # inside a transaction: its connection (errors mapped as it ends)
            yield self._pinned
            return
        connection = await self._acquire(background)
        try:
            yield connection
        except BaseException as error:
            # Cancelled by the request deadline or broken mid-protocol: never reuse it, and never
            # wait for a server that may not answer at all to close it.
            if not self._keeps_connection(error):
                self._terminate(connection)
            mapped = self._map_error(error, write)
            if mapped is error:
                raise
            raise mapped from None
        finally:
            self._release(connection, background)

    async def _acquire(self, background: bool) -> C:
        if self._pool is None:
            raise self.failure(ShardUnavailable, "not open")
        try:
            if not background:
                return await self._pool.acquire()
            await self._background_turn.acquire()
            try:
                if self._background is None or self._is_closed(self._background):
                    self._background = await self._connect()
            except BaseException:
                self._background_turn.release()
                raise
            return self._background
        except self.driver_errors as error:
            raise self.cannot_connect(error) from None

    def _release(self, connection: C, background: bool) -> None:
        if background:
            self._background_turn.release()
            return
        if self._pool is None:
            return
        if not self._is_closed(connection) and self._in_transaction(connection):
            self._terminate(connection)  # never hand on a half-done transaction
        self._pool.release(connection)


class _SessionLock(SweeperLock, Generic[C]):
    """A sweeper lock held by a database session of its own (PostgreSQL advisory lock, MySQL ``GET_LOCK``).

    The session is one more connection of the node's driver, kept between bursts of sweeping, so
    taking the lock again costs one round trip, not a connection; the server drops the lock with
    the session, however its holder dies.
    """

    def __init__(self, node: ServerNode[C]) -> None:
        self._node = node
        self._session: C | None = None
        self._held = False

    async def acquire(self) -> bool:
        if self.held():
            return True
        node = self._node
        take, _ = node.sweeper_lock_statements
        try:
            if self._session is None or node._is_closed(self._session):
                self._session = await node._connect()
            self._held = await node._fetch_value(self._session, take, node.lock_params) == 1
        except BaseException as error:
            await self.close()  # cancelled or failed mid-statement: the session's state is unknown
            if isinstance(error, node.driver_errors):
                raise node.failure(ShardUnavailable, f"sweeper lock: {describe(error)}") from None
            raise
        return self._held

    def held(self) -> bool:
        return self._held and self._session is not None and not self._node._is_closed(self._session)

    async def release(self) -> None:
        if not self.held() or self._session is None:
            self._held = False
            return
        self._held = False
        _, give_back = self._node.sweeper_lock_statements
        try:
            await self._node._fetch_value(self._session, give_back, self._node.lock_params)
        except BaseException as error:
            await self.close()  # closing the session releases the lock just as well
            if not isinstance(error, self._node.driver_errors):
                raise

    async def close(self) -> None:
        if self._session is not None:
            self._node._terminate(self._session)
        self._session, self._held = None, False
