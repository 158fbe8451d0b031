"""The narrow interface every database node implements, and the row it returns.

A node is one database server (a shard's primary, or later a replica) together with its
connection pool. Everything above ``backends/`` talks to nodes only through this interface,
so the router, the HTTP layer and the sweeper never branch on the engine.

Time is always the database's: callers pass TTLs as durations and the node computes
``now + ttl`` with the server's clock, in the same statement that uses it.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar

from kvstore.errors import ShardError, ShardUnavailable, StaleRing, WriteOutcomeUnknown, describe

E = TypeVar("E", bound=ShardError)
# 2: the kvstore_state table (ring record, copier cursors); 3: the kvstore_fence function (a
# shard that fences cannot be served by a front end that does not route by epoch)
SCHEMA_VERSION = 3
RING_STATE = "ring"  # the kvstore_state entry of the ring record, whose epoch fences key statements
PERSISTENT_TTL = 2**63 - 1  # max BIGINT: "never expires", so `ttl > now` selects every live row
SOFT_DELETED_TTL = -1
# A counter's value: a signed 64-bit decimal integer, as Redis INCR takes it (no sign on zero, no
# leading zeros, no spaces). The engines' increments check it with this pattern.
INTEGER_PATTERN = "0|-{0,1}[1-9][0-9]{0,18}"  # no "?": statements use it as their placeholder


@dataclass(frozen=True, slots=True)
class Row:
    """A live key's state; ``value`` is None when the operation did not read it."""

    version: int
    expires_at_ms: int | None
    value: bytes | None = None

    @classmethod
    def from_columns(cls, ttl: int, version: int, value: bytes | None = None) -> "Row":
        return cls(version=version, expires_at_ms=None if ttl == PERSISTENT_TTL else ttl, value=value)


@dataclass(frozen=True, slots=True)
class Put:
    """One unconditional write of a batch (``Node.put_many``); ``ttl_ms=None`` means no expiry."""

    key: str
    value: bytes
    ttl_ms: int | None


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as stored, whatever its state: what resharding moves between nodes unchanged.

    ``ttl`` is the raw column (absolute expiry, PERSISTENT_TTL, or SOFT_DELETED_TTL); ``live``
    is the database's own verdict (``ttl > now`` on its clock) at the time of reading.
    """

    key: str
    value: bytes
    ttl: int
    version: int
    live: bool


@dataclass(frozen=True, slots=True)
class ListedRow:
    """A row as a listing meets it, live or dead, without its value: ``size`` is the value's length
    in bytes, so a page can be cut to a byte budget before any value is read."""

    key: str
    size: int
    ttl: int
    version: int
    live: bool


class Node(ABC):
    """One database server and its pool. ``ttl_ms=None`` means "no expiry"."""

    def __init__(self, shard: str, role: str) -> None:
        self.shard = shard
        self.role = role
        self.label = f"{shard}/{role}"  # how logs, metrics and errors name the node, e.g. ``s0/primary``
        # The ring epoch this node's key statements are fenced with (the router sets it; None: not
        # fenced, as for admin tools, which route by no ring).
        self.routed_epoch: int | None = None

    def failure(self, kind: type[E], detail: str) -> E:
        """A shard error of ``kind`` that names this node's shard and role."""
        return kind(self.shard, f"{self.role}: {detail}")

    def stale_ring(self) -> StaleRing:
        """The shard refused a statement fenced with ``routed_epoch``: its ring epoch is another."""
        return self.failure(StaleRing, f"refused ring epoch {self.routed_epoch}: the shard's ring record is newer")

    def connection_lost(self, error: BaseException, write: bool) -> ShardError:
        """The error for a connection that broke mid-operation: a write's outcome is then unknown."""
        if write:
            return self.failure(
                WriteOutcomeUnknown, f"connection lost during a write; it may have been applied ({describe(error)})"
            )
        return self.failure(ShardUnavailable, f"connection lost: {describe(error)}")

    @abstractmethod
    async def open(self) -> None:
        """Create the pool; raises ShardUnavailable when the server cannot be reached."""

    @abstractmethod
    async def close(self, timeout_s: float) -> None:
        """Close the pool gracefully, forcibly once ``timeout_s`` has passed."""

    @abstractmethod
    async def ensure_schema(self) -> None:
        """Create the schema where there is none; raise SchemaError for a foreign or newer one."""

    @abstractmethod
    async def ping(self) -> None:
        """One round trip; raises a ShardError when the node cannot answer."""

    @abstractmethod
    def connections_in_use(self) -> int:
        """Connections currently checked out of the pool (a metrics gauge)."""

    @abstractmethod
    async def get(self, key: str) -> Row | None:
        """The live row for ``key`` with its value, or None if missing, expired or deleted."""

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_ms: int | None) -> tuple[Row, bool]:
        """Write ``key`` whatever its state: ``(row, created)``, created meaning no live row was there."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, Row]:
        """The live rows (with values) of those ``keys`` that have one, in one statement."""

    @abstractmethod
    async def put_many(self, writes: Sequence[Put]) -> list[tuple[Row, bool]]:
        """``put`` for each write, as one statement where the engine can: results in the writes' order.

        The keys must be distinct (an engine may refuse to touch a row twice in one statement) and
        should be sorted, so that concurrent batches lock rows in one order and never deadlock.
        Atomic: when it raises, none of the writes was applied (unless the connection was lost).
        """

    @abstractmethod
    async def delete_many(self, keys: Sequence[str]) -> set[str]:
        """``soft_delete`` (unconditional) for each of ``keys``, as one statement where the engine can:
        the keys that were live and are now deleted. Keys distinct and sorted, as for ``put_many``."""

    @abstractmethod
    async def incr(self, key: str, by: int) -> Row | None:
        """Add ``by`` to the key's value, a decimal integer, in one statement: the row it leaves,
        with the new value. Without a live row the key starts at 0 and has no expiry; a live row
        keeps its expiry. None, changing nothing, when the live value is not an integer
        (``INTEGER_PATTERN``) or the sum would leave the signed 64-bit range."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager["Node"]:
        """A database transaction on one connection, as a node whose every method runs in it:
        committed when the block ends, rolled back when it raises. Its writes lock their rows
        until then; reads see its own writes."""

    @abstractmethod
    async def lock_rows(self, keys: Sequence[str]) -> list[StoredRow]:
        """Inside ``transaction``: lock ``keys``' rows until it ends, present or not (a missing key
        gets a tombstone row to lock, which is absent to every reader and which the sweeper
        removes), and return them as ``fetch_rows`` does. Keys are locked in sorted order."""

    @abstractmethod
    async def replace(self, key: str, value: bytes, ttl_ms: int | None, if_version: int | None) -> Row | None:
        """Overwrite a live row (of version ``if_version`` when given); None if there was none."""

    @abstractmethod
    async def create(self, key: str, value: bytes, ttl_ms: int | None) -> Row | None:
        """Write a row where no live one exists (starting a new version lineage); None if one did."""

    @abstractmethod
    async def touch(self, key: str, ttl_ms: int | None, if_version: int | None) -> Row | None:
        """Change a live row's expiry without rewriting its value; None if not live / no match."""

    @abstractmethod
    async def soft_delete(self, key: str, if_version: int | None) -> bool:
        """Mark a live row deleted (``ttl = -1``); False if not live / no match."""

    @abstractmethod
    async def sample_expiring(self, count: int) -> list[tuple[str, bool]]:
        """Up to ``count`` random rows among those with an expiry or deleted: ``(key, is_dead)``.

        One index seek at a random point of the sweep-slot index, so it costs O(log n + count)
        whatever the table size.
        """

    @abstractmethod
    async def purge(self, keys: Sequence[str]) -> int:
        """Hard-delete those of ``keys`` that are dead *now* (re-checked in the same statement)."""

    @abstractmethod
    async def scan_keys(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` keys greater than ``after`` in key order (batched full scans)."""

    @abstractmethod
    async def fetch_rows(self, keys: Sequence[str]) -> list[StoredRow]:
        """The rows of those ``keys`` that exist, live or dead (a tombstone is an answer too)."""

    @abstractmethod
    async def list_range(self, start: str, stop: str | None, *, descending: bool, limit: int) -> list[ListedRow]:
        """Up to ``limit`` rows, live or dead, with ``start <= key < stop`` (no upper bound when
        ``stop`` is None), in byte order of the keys' UTF-8 (from the top when ``descending``).

        One index range scan that reads at most ``limit`` rows, dead ones included, so its cost
        never depends on how many dead rows the range holds (the caller filters them).
        """

    @abstractmethod
    async def scan_rows(self, after: str, limit: int) -> list[StoredRow]:
        """Up to ``limit`` live rows with keys greater than ``after``, in key order."""

    @abstractmethod
    async def import_rows(self, rows: Sequence[StoredRow], *, overwrite: bool) -> int:
        """Write rows with their own ``ttl`` and ``version``; where a key already has a row, keep
        it (``overwrite=False``: returns how many were new) or replace it (returns ``len(rows)``)."""

    @abstractmethod
    async def remove(self, keys: Sequence[str]) -> int:
        """Hard-delete these keys' rows whatever their state (resharding's cleanup)."""

    @abstractmethod
    async def read_state(self, name: str) -> tuple[int, str] | None:
        """A ``kvstore_state`` entry: ``(epoch, value)``, or None where there is none."""

    @abstractmethod
    async def write_state(self, name: str, value: str, epoch: int, expected_epoch: int | None) -> bool:
        """Compare-and-set a ``kvstore_state`` entry: create it (``expected_epoch=None``) or replace
        the one at ``expected_epoch`` with a greater ``epoch``. False when the entry was not in the
        expected state."""

    @abstractmethod
    async def table_stats(self) -> "TableStats":
        """Row counts without a full scan where the engine keeps estimates; raises SchemaError without a schema."""

    @abstractmethod
    async def replication_position(self) -> str:
        """On a primary: a position at or after every transaction committed so far (WAL LSN, GTID set)."""

    @abstractmethod
    async def has_replayed(self, position: str) -> bool:
        """On a replica: whether it has applied everything up to ``position``."""

    @abstractmethod
    async def replica_state(self, primary_position: str) -> "ReplicaState":
        """On a replica: replay progress against the primary's current position, for the lag probe."""

    @abstractmethod
    def sweeper_lock(self) -> "SweeperLock":
        """The shard-wide sweeper lock as seen from this node (the same object every call).

        It lives on a connection (or file descriptor) of its own, kept while the node is open, so
        it can be taken and given back per burst of sweep cycles at one round trip each, and it
        is released when its holder dies, however it dies. ``close`` closes it too.
        """


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """What a replica says of itself against a primary position."""

    caught_up: bool  # has replayed everything up to the position it was asked about
    seconds_since_replay: float | None  # the engine's own lag figure; None when replication is not running


@dataclass(frozen=True, slots=True)
class TableStats:
    """How big a node's table is, for operators: exact counts or the engine's own estimates.

    ``expiring`` counts rows with an expiry or soft-deleted (those with a sweep slot). Either
    count is None where the engine has no figure (e.g. a PostgreSQL table never analyzed).
    """

    rows: int | None
    expiring: int | None
    exact: bool
    schema_version: int | None


class SweeperLock(ABC):
    """While held: proof that this process is the only one sweeping a shard."""

    @abstractmethod
    async def acquire(self) -> bool:
        """Take the lock if it is free, without waiting: False when another process holds it.
        Raises a ShardError when the database cannot be reached."""

    @abstractmethod
    def held(self) -> bool:
        """False once released, or once the lock's connection is gone: stop sweeping."""

    @abstractmethod
    async def release(self) -> None:
        """Give the lock up, keeping its connection for the next ``acquire`` (idempotent)."""

    @abstractmethod
    async def close(self) -> None:
        """Give the lock up and close its connection (idempotent)."""
