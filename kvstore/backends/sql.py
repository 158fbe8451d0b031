"""Shared SQL: statement templates, the dialect knobs they need, and the node logic on top.

Dialects differ only where the engines do: placeholders, how to quote ``key``, "now" in
milliseconds and microseconds on the server's clock, ``GREATEST``, the schema DDL, and (for
MySQL, which has no ``RETURNING``) the write statements. A driver module supplies a dialect
and three primitives (:meth:`SqlNode._fetch_one`, :meth:`SqlNode._write_returning`,
:meth:`SqlNode._write`); everything else lives here once.

Every statement on a key is *fenced*: it also checks, in the same statement, that the shard's
ring epoch (``kvstore_state``, entry ``ring``) is the one the node routes by
(:attr:`Node.routed_epoch`), through the engine's ``kvstore_fence``, which raises when it is not
(:class:`StaleRing`; nothing is applied). Each engine evaluates it once per statement, even when
no row matches: a gating filter in PostgreSQL, a constant in MariaDB, and in SQLite, which
evaluates a WHERE term only with a row, the key a statement looks up (``Dialect.fenced_key``).
The epoch is written into the statement as a literal when it runs (``NULL``: an admin tool's
node, which routes by no ring, is never refused), so a statement is prepared once per epoch.

Versions (the ETag) follow one rule on every write: ``version = GREATEST(version + 1, now_us)``,
and a new row starts at ``now_us``. Within a row this is strictly increasing; across a hard
delete and re-create it still never repeats, because a row's last version is at most the
server time (in microseconds) of its last write unless it saw more than one write per
microsecond, and the re-created row starts later. It assumes the shard's clock does not step
back by more than the time between a key's hard delete and its re-creation.
"""

import asyncio
import functools
import random
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvstore.backends.base import (
    PERSISTENT_TTL,
    RING_STATE,
    SCHEMA_VERSION,
    SOFT_DELETED_TTL,
    ListedRow,
    Node,
    Put,
    ReplicaState,
    Row,
    StoredRow,
    TableStats,
)
from kvstore.errors import SchemaError, ShardError, ShardTimeout

Params = Sequence[Any]
_PUT_ATTEMPTS = 16
# Where the engine's row estimate is missing or at most this, ``table_stats`` counts instead:
# counting this many rows takes milliseconds, while a fresh PostgreSQL table has no estimate
# until it is first analyzed and InnoDB's is a rough sample. Bounded, so a wrong estimate never
# turns into a full scan of a big table.
EXACT_COUNT_LIMIT = 100_000


# Where a statement's routed epoch goes; ``SqlNode._fenced`` writes the epoch there when it runs.
ROUTED_EPOCH = "/*routed epoch*/"
# The shard's ring epoch as a scalar sub-select (NULL while no ring record was published).
RING_EPOCH = f"(SELECT epoch FROM kvstore_state WHERE name = '{RING_STATE}')"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    min_size: int
    max_size: int
    connect_timeout_s: float
    statement_timeout_s: float


@dataclass(frozen=True)
class Dialect:
    """The SQL fragments that differ between engines."""

    name: str
    key_column: str
    now_ms: str
    now_us: str
    greatest: str
    replication_position: str  # one row, one column: the primary's position
    has_replayed: str  # one row: replayed up to the ``?`` position (true/false)
    replica_state: str  # one row: (caught up to the ``?`` position, engine's lag in seconds or NULL)
    table_stats: str  # one row: (rows, rows with a sweep slot, exact?), NULL counts where the engine has none
    schema: tuple[str, ...]  # tables, created before their columns are checked
    indexes: tuple[str, ...]  # created once the tables are known to be ours
    claim_schema_version: str
    # Insert-or-keep and insert-or-replace, as a suffix of INSERT for a conflict on ``{column}``.
    keep_on_conflict: str = "ON CONFLICT ({column}) DO NOTHING"
    replace_on_conflict: str = (
        "ON CONFLICT ({column}) DO UPDATE SET value = excluded.value, ttl = excluded.ttl,"
        " version = excluded.version, sweep_slot = excluded.sweep_slot"
    )
    placeholder: str = "?"  # "?", "%s", or "$" for PostgreSQL's numbered $1, $2, ...
    # ``key IN (…)`` for a list of keys; PostgreSQL binds them as one array (``= ANY(?)``, no
    # ``{keys}`` to fill), so a batch of any size is one prepared statement.
    key_list: str = "IN ({keys})"
    # A random sweep slot computed by the engine, where it has ``UPDATE … RETURNING`` (batched
    # deletes need both); None: deletes go one statement each.
    random_slot: str | None = None
    integer_param: str = "?"  # a parameter whose type the engine cannot infer from its context
    # The stored value ``s.value`` plus the ``?`` increment, as the new value's bytes, or NULL when
    # it is not an integer (``INTEGER_PATTERN``) or the sum leaves the signed 64-bit range.
    incremented: str = "NULL"
    # The fence (see the module docstring): 0, or an error when the shard's ring epoch is not ``{epoch}``.
    fence: str = "kvstore_fence({epoch})"
    # A statement's (first) key parameter; a dialect that fences it there, rather than with a WHERE
    # term, returns the key from the fence (``?``) and has no WHERE term.
    fenced_key: str = "?"
    # Where set, a lookup by key (GET, a batch's GETs) reports the shard's ring epoch in a last
    # column, read from this one-row table joined to ``store``, and the node checks it, rather
    # than calling the fence: on MariaDB a stored-function call costs more than the lookup itself.
    # Both read one snapshot, so the check is as good; the row is there even when no key matches.
    epoch_row: str | None = None
    # Run, in one transaction, before a new ring epoch is written: waits for the fenced writes in
    # flight, which read the old epoch, and holds back new ones until the epoch is written.
    ring_barrier: str | None = None
    begin: str = "BEGIN"  # starts a transaction (``Node.transaction``)
    for_update: str = " FOR UPDATE"  # locks the rows a read returns, inside a transaction

    @property
    def fences_key(self) -> bool:
        return self.fenced_key != "?"

    def key_param(self) -> str:
        return self.fenced_key.format(epoch=ROUTED_EPOCH)

    @property
    def array_keys(self) -> bool:
        """Whether a list of keys is bound as one array parameter rather than one placeholder each."""
        return "{keys}" not in self.key_list

    def render(self, template: str, **fragments: str) -> str:
        """Fill a template's fragments and rewrite its ``?`` placeholders for this driver."""
        fence = self.fence.format(epoch=ROUTED_EPOCH)
        where_fence = "" if self.fences_key else f" AND {fence} = 0"
        sql = template.format(
            key=self.key_column,
            key_param=self.key_param(),
            fence=where_fence,  # a WHERE term
            fence_term=fence,  # a term that adds 0 to a value, where a statement has no WHERE
            # lookups by key (see ``epoch_row``): FROM {lookup_from} <conditions>{lookup_fence}
            lookup_from="store WHERE" if self.epoch_row is None else f"{self.epoch_row} LEFT JOIN store ON",
            lookup_epoch="" if self.epoch_row is None else ", ring_epoch",
            lookup_fence=where_fence if self.epoch_row is None else "",
            now_ms=self.now_ms,
            now_us=self.now_us,
            expiry=f"COALESCE({self.now_ms} + ?, {PERSISTENT_TTL})",
            next_version=f"{self.greatest}(version + 1, {self.now_us})",
            slot=f"CASE WHEN {self.integer_param} IS NULL THEN NULL ELSE COALESCE(sweep_slot, ?) END",
            greatest=self.greatest,
            **fragments,
        )
        if self.placeholder == "?":
            return sql
        pieces = sql.split("?")
        if self.placeholder == "$":
            numbered = (f"${index}" for index in range(1, len(pieces)))
            return pieces[0] + "".join(n + piece for n, piece in zip(numbered, pieces[1:], strict=True))
        return self.placeholder.join(pieces)

    def statements(self) -> "Statements":
        return Statements.build(self, STANDARD_WRITES)


GET = "SELECT value, ttl, version{lookup_epoch} FROM {lookup_from} {key} = {key_param} AND ttl > {now_ms}{lookup_fence}"
GET_MANY = (
    "SELECT {key}, value, ttl, version{lookup_epoch} FROM {lookup_from} {key} {keys} AND ttl > {now_ms}{lookup_fence}"
)
SOFT_DELETE = (
    "UPDATE store SET ttl = -1, version = {next_version}, sweep_slot = COALESCE(sweep_slot, ?)"
    " WHERE {key} = {key_param} AND ttl > {now_ms}{check}{fence}"
)
DELETE_MANY = (
    "UPDATE store SET ttl = -1, version = {next_version}, sweep_slot = COALESCE(sweep_slot, {random_slot})"
    " WHERE {key} {keys} AND ttl > {now_ms}{fence} RETURNING {key}"
)
# A counter in one statement: a fresh row when there is no live one, else the sum; a live value
# that is no integer matches no row of the conflict branch (RETURNING nothing). SET expressions
# read the row as it was, so ``s.ttl`` is the old expiry throughout.
INCR = (
    "INSERT INTO store AS s ({key}, value, ttl, version, sweep_slot)"
    " VALUES (?, ?, {persistent}, {now_us} + {fence_term}, NULL)"
    " ON CONFLICT ({key}) DO UPDATE SET value = CASE WHEN s.ttl > {now_ms} THEN {incremented} ELSE excluded.value END,"
    " ttl = CASE WHEN s.ttl > {now_ms} THEN s.ttl ELSE excluded.ttl END,"
    " version = {greatest}(s.version + 1, excluded.version),"
    " sweep_slot = CASE WHEN s.ttl > {now_ms} THEN s.sweep_slot END"
    " WHERE s.ttl <= {now_ms} OR {incremented} IS NOT NULL"
    " RETURNING value, ttl, version"
)
PROBE_COLUMNS = "SELECT {key}, value, ttl, version, sweep_slot FROM store WHERE 1 = 0"
SAMPLE = "SELECT {key}, ttl <= {now_ms} FROM store WHERE sweep_slot >= ? ORDER BY sweep_slot LIMIT ?"
PURGE = "DELETE FROM store WHERE {key} {keys} AND ttl <= {now_ms}{fence}"
SCAN_KEYS = "SELECT {key} FROM store WHERE {key} > ? ORDER BY {key} LIMIT ?"
LIST_RANGE = (
    "SELECT {key}, LENGTH(value), ttl, version, ttl > {now_ms} FROM store"
    " WHERE {key} >= {key_param}{stop}{fence} ORDER BY {key}{direction} LIMIT ?"
)
READ_SCHEMA_VERSION = "SELECT value FROM kvstore_meta WHERE name = 'schema_version'"
UPGRADE_SCHEMA_VERSION = "UPDATE kvstore_meta SET value = ? WHERE name = 'schema_version' AND value = ?"
FETCH_ROWS = "SELECT {key}, value, ttl, version, ttl > {now_ms} FROM store WHERE {key} {keys}{fence}"
SCAN_ROWS = "SELECT {key}, value, ttl, version, 1 FROM store WHERE {key} > ? AND ttl > {now_ms} ORDER BY {key} LIMIT ?"
IMPORT_ROWS = "INSERT INTO store ({key}, value, ttl, version, sweep_slot) VALUES {rows} {conflict}"
REMOVE = "DELETE FROM store WHERE {key} {keys}{fence}"
READ_STATE = "SELECT epoch, value FROM kvstore_state WHERE name = ?"
CREATE_STATE = "INSERT INTO kvstore_state (name, epoch, value) VALUES (?, ?, ?) {conflict}"
UPDATE_STATE = "UPDATE kvstore_state SET epoch = ?, value = ? WHERE name = ? AND epoch = ?"
COUNT_ROWS = "SELECT COUNT(*), COUNT(sweep_slot) FROM (SELECT sweep_slot FROM store LIMIT ?) bounded"
VERSION_CHECK = " AND version = ?"


@dataclass(frozen=True)
class WriteTemplates:
    """Writes that report the row they leave behind: ``(ttl, version)`` or nothing.

    ``upsert`` is the single-statement unconditional PUT where the engine can also report
    whether the row it overwrote was live; without it a PUT is "replace, else create".
    """

    replace: str
    create: str
    touch: str
    upsert: str | None = None


STANDARD_WRITES = WriteTemplates(
    replace=(
        "UPDATE store SET value = ?, ttl = {expiry}, version = {next_version}, sweep_slot = {slot}"
        " WHERE {key} = {key_param} AND ttl > {now_ms}{check}{fence} RETURNING ttl, version"
    ),
    create=(
        "INSERT INTO store ({key}, value, ttl, version, sweep_slot) VALUES (?, ?, {expiry}, {now_us} + {fence_term}, ?)"
        " ON CONFLICT ({key}) DO UPDATE SET value = excluded.value, ttl = excluded.ttl,"
        " version = {greatest}(store.version + 1, excluded.version), sweep_slot = excluded.sweep_slot"
        " WHERE store.ttl <= {now_ms} RETURNING ttl, version"
    ),
    touch=(
        "UPDATE store SET ttl = {expiry}, version = {next_version}, sweep_slot = {slot}"
        " WHERE {key} = {key_param} AND ttl > {now_ms}{check}{fence} RETURNING ttl, version"
    ),
)


@dataclass(frozen=True)
class Statements:
    """Every statement a node runs, rendered once per dialect at import time."""

    get: str
    upsert: str | None
    replace: str
    replace_if_version: str
    create: str
    touch: str
    touch_if_version: str
    soft_delete: str
    soft_delete_if_version: str
    incr: str
    probe_columns: str
    read_schema_version: str
    replication_position: str
    has_replayed: str
    replica_state: str
    sample: str
    scan_keys: str
    scan_rows: str
    list_range: dict[tuple[bool, bool], str]  # by (bounded above, descending)
    read_state: str
    create_state: str
    update_state: str
    upgrade_schema_version: str
    table_stats: str
    count_rows: str

    @classmethod
    def build(cls, dialect: Dialect, writes: WriteTemplates) -> "Statements":
        def both(template: str) -> tuple[str, str]:
            return dialect.render(template, check=""), dialect.render(template, check=VERSION_CHECK)

        replace, replace_if_version = both(writes.replace)
        touch, touch_if_version = both(writes.touch)
        soft_delete, soft_delete_if_version = both(SOFT_DELETE)
        return cls(
            get=dialect.render(GET),
            upsert=None if writes.upsert is None else dialect.render(writes.upsert),
            replace=replace,
            replace_if_version=replace_if_version,
            create=dialect.render(writes.create),
            touch=touch,
            touch_if_version=touch_if_version,
            soft_delete=soft_delete,
            soft_delete_if_version=soft_delete_if_version,
            incr=dialect.render(INCR, incremented=dialect.incremented, persistent=str(PERSISTENT_TTL)),
            probe_columns=dialect.render(PROBE_COLUMNS),
            read_schema_version=READ_SCHEMA_VERSION,
            replication_position=dialect.replication_position,
            has_replayed=dialect.render(dialect.has_replayed),
            replica_state=dialect.render(dialect.replica_state),
            sample=dialect.render(SAMPLE),
            scan_keys=dialect.render(SCAN_KEYS),
            scan_rows=dialect.render(SCAN_ROWS),
            list_range={
                (bounded, descending): dialect.render(
                    LIST_RANGE,
                    # fenced too: a descending scan starts from this bound
                    stop=f" AND {dialect.key_column} < {dialect.key_param()}" if bounded else "",
                    direction=" DESC" if descending else "",
                )
                for bounded in (False, True)
                for descending in (False, True)
            },
            read_state=dialect.render(READ_STATE),
            create_state=dialect.render(CREATE_STATE, conflict=dialect.keep_on_conflict.format(column="name")),
            update_state=dialect.render(UPDATE_STATE),
            upgrade_schema_version=dialect.render(UPGRADE_SCHEMA_VERSION),
            table_stats=dialect.table_stats,
            count_rows=dialect.render(COUNT_ROWS),
        )


class SqlNode(Node):
    """The Node interface written once over three driver primitives."""

    dialect: Dialect
    statements: Statements

    @abstractmethod
    async def _fetch_one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """Run a read and return its first row."""

    @abstractmethod
    async def _write_returning(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        """Run a write and return the ``(ttl, version)`` it left, or None if it changed nothing."""

    @abstractmethod
    async def _write(self, sql: str, params: Params, *, background: bool = False) -> int:
        """Run a write (or DDL) and return the number of rows it changed.

        ``background`` marks the sweeper's work: a driver whose requests share one connection
        (SQLite) runs it on a connection of its own, so that it never queues foreground reads.
        """

    @abstractmethod
    async def _fetch_all(self, sql: str, params: Params, *, background: bool = False) -> list[tuple[Any, ...]]:
        """Run a read and return every row, keys decoded to ``str``."""

    def __init__(self, shard: str, role: str) -> None:
        super().__init__(shard, role)
        self._fenced_epoch: int | None = None  # the epoch ``_fenced_statements`` were written for
        self._fenced_statements: dict[str, str] = {}

    def _fenced(self, sql: str) -> str:
        """``sql`` with :attr:`routed_epoch` written into its fence (statements without one as they are).

        Kept per epoch: the same statement object each time, whose hash the driver's statement
        cache does not compute again, for the price of a dict lookup.
        """
        if self._fenced_epoch != self.routed_epoch:
            self._fenced_epoch, self._fenced_statements = self.routed_epoch, {}
        fenced = self._fenced_statements.get(sql)
        if fenced is None:
            epoch = "NULL" if self.routed_epoch is None else str(self.routed_epoch)
            fenced = self._fenced_statements[sql] = sql.replace(ROUTED_EPOCH, epoch)
        return fenced

    async def get(self, key: str) -> Row | None:
        row = await self._fetch_one(self.statements.get, (key,))
        rows = self._looked_up([] if row is None else [row])
        return Row.from_columns(rows[0][1], rows[0][2], bytes(rows[0][0])) if rows else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, Row]:
        statement = keyed_statement(self.dialect, GET_MANY, len(keys))
        rows = self._looked_up(await self._fetch_all(statement, key_params(self.dialect, keys)))
        return {key: Row.from_columns(ttl, version, bytes(value)) for key, value, ttl, version in rows}

    def _looked_up(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """A lookup's rows. Where the dialect reports the shard's epoch (``Dialect.epoch_row``), a
        stale one is refused here, and the epoch column and the row of no match are dropped."""
        if self.dialect.epoch_row is None:
            return rows
        if rows and self.routed_epoch is not None and rows[0][-1] != self.routed_epoch:
            raise self.stale_ring()
        return [row[:-1] for row in rows if row[0] is not None]

    async def put_many(self, writes: Sequence[Put]) -> list[tuple[Row, bool]]:
        """One ``put`` after another; dialects with a multi-row upsert that reports each row override it."""
        return [await self.put(write.key, write.value, write.ttl_ms) for write in writes]

    async def delete_many(self, keys: Sequence[str]) -> set[str]:
        if self.dialect.random_slot is None:
            return {key for key in keys if await self.soft_delete(key, None)}
        statement = keyed_statement(self.dialect, DELETE_MANY, len(keys))
        return {row[0] for row in await self._write_rows(statement, key_params(self.dialect, keys))}

    async def _write_rows(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """Run a write with ``RETURNING`` rows. Only dialects with a ``random_slot`` call it."""
        raise NotImplementedError(f"{self.dialect.name} has no UPDATE … RETURNING")

    async def _upsert(self, sql: str, params: Params) -> tuple[int, int, bool]:
        """Run the dialect's upsert: ``(ttl, version, created)``. Only dialects with one call it."""
        raise NotImplementedError(f"{self.dialect.name} has no single-statement upsert")

    async def put(self, key: str, value: bytes, ttl_ms: int | None) -> tuple[Row, bool]:
        if self.statements.upsert is not None:
            ttl, version, created = await self._upsert(self.statements.upsert, (key, value, ttl_ms, sweep_slot(ttl_ms)))
            return Row.from_columns(ttl, version), created
        # Replace the live row, else create one; each step is atomic, and if a concurrent writer
        # changes the key between the two the pair is simply tried again.
        for _ in range(_PUT_ATTEMPTS):
            row = await self.replace(key, value, ttl_ms, None)
            if row is not None:
                return row, False
            row = await self.create(key, value, ttl_ms)
            if row is not None:
                return row, True
        raise self.failure(ShardTimeout, "the key changed under every attempt to write it; try again")

    async def incr(self, key: str, by: int) -> Row | None:
        row = await self._write_returning(self.statements.incr, (key, str(by).encode(), by, by))
        return None if row is None else Row.from_columns(int(row[1]), int(row[2]), bytes(row[0]))

    async def replace(self, key: str, value: bytes, ttl_ms: int | None, if_version: int | None) -> Row | None:
        slot = sweep_slot(ttl_ms)
        if if_version is None:
            return await self._row(self.statements.replace, (value, ttl_ms, slot, slot, key))
        return await self._row(self.statements.replace_if_version, (value, ttl_ms, slot, slot, key, if_version))

    async def create(self, key: str, value: bytes, ttl_ms: int | None) -> Row | None:
        return await self._row(self.statements.create, (key, value, ttl_ms, sweep_slot(ttl_ms)))

    async def touch(self, key: str, ttl_ms: int | None, if_version: int | None) -> Row | None:
        slot = sweep_slot(ttl_ms)
        if if_version is None:
            return await self._row(self.statements.touch, (ttl_ms, slot, slot, key))
        return await self._row(self.statements.touch_if_version, (ttl_ms, slot, slot, key, if_version))

    async def soft_delete(self, key: str, if_version: int | None) -> bool:
        slot = _random_slot()
        if if_version is None:
            return await self._write(self.statements.soft_delete, (slot, key)) > 0
        return await self._write(self.statements.soft_delete_if_version, (slot, key, if_version)) > 0

    async def sample_expiring(self, count: int) -> list[tuple[str, bool]]:
        start = _random_slot()
        rows = await self._fetch_all(self.statements.sample, (start, count), background=True)
        if len(rows) < count:  # ran off the end of the slot space: wrap around to its start
            rows += await self._fetch_all(self.statements.sample, (0, count - len(rows)), background=True)
        return [(key, bool(expired)) for key, expired in dict(rows).items()]

    async def purge(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        statement = keyed_statement(self.dialect, PURGE, len(keys))
        return await self._write(statement, key_params(self.dialect, keys), background=True)

    async def scan_keys(self, after: str, limit: int) -> list[str]:
        return [row[0] for row in await self._fetch_all(self.statements.scan_keys, (after, limit), background=True)]

    async def fetch_rows(self, keys: Sequence[str]) -> list[StoredRow]:
        if not keys:
            return []
        statement = keyed_statement(self.dialect, FETCH_ROWS, len(keys))
        rows = await self._fetch_all(statement, key_params(self.dialect, keys))
        return [_stored_row(row) for row in rows]

    async def lock_rows(self, keys: Sequence[str]) -> list[StoredRow]:
        ordered = sorted(set(keys))
        placeholders = [StoredRow(key, b"", SOFT_DELETED_TTL, 0, live=False) for key in ordered]
        await self.import_rows(placeholders, overwrite=False)
        statement = keyed_statement(
            self.dialect, FETCH_ROWS + " ORDER BY {key}" + self.dialect.for_update, len(ordered)
        )
        return [_stored_row(row) for row in await self._fetch_all(statement, key_params(self.dialect, ordered))]

    async def list_range(self, start: str, stop: str | None, *, descending: bool, limit: int) -> list[ListedRow]:
        statement = self.statements.list_range[(stop is not None, descending)]
        params = (start, limit) if stop is None else (start, stop, limit)
        rows = await self._fetch_all(statement, params)
        return [ListedRow(key, size, ttl, version, bool(live)) for key, size, ttl, version, live in rows]

    async def scan_rows(self, after: str, limit: int) -> list[StoredRow]:
        rows = await self._fetch_all(self.statements.scan_rows, (after, limit), background=True)
        return [_stored_row(row) for row in rows]

    async def import_rows(self, rows: Sequence[StoredRow], *, overwrite: bool) -> int:
        if not rows:
            return 0
        params = [
            cell
            for row in rows
            for cell in (
                row.key,
                row.value,
                row.ttl,
                row.version,
                None if row.ttl == PERSISTENT_TTL else _random_slot(),
            )
        ]
        written = await self._write(_import_statement(self.dialect, len(rows), overwrite), params)
        # Engines count an overwritten row differently (MySQL: 2); an insert counts 1 everywhere.
        return len(rows) if overwrite else written

    async def remove(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        statement = keyed_statement(self.dialect, REMOVE, len(keys))
        return await self._write(statement, key_params(self.dialect, keys), background=True)

    async def read_state(self, name: str) -> tuple[int, str] | None:
        row = await self._fetch_one(self.statements.read_state, (name,))
        return None if row is None else (int(row[0]), str(row[1]))

    async def write_state(self, name: str, value: str, epoch: int, expected_epoch: int | None) -> bool:
        if expected_epoch is None:
            return await self._write(self.statements.create_state, (name, epoch, value)) > 0
        if epoch <= expected_epoch:
            # A moving epoch also makes every successful update change the row: MySQL counts
            # changed rows, not matched ones, so a no-op update would read as a lost race.
            raise ValueError(f"a state entry's epoch only moves forward ({expected_epoch} -> {epoch})")
        update = (epoch, value, name, expected_epoch)
        if name != RING_STATE or self.dialect.ring_barrier is None:
            return await self._write(self.statements.update_state, update) > 0
        async with self.transaction() as node:
            assert isinstance(node, SqlNode)
            await node._write(self.dialect.ring_barrier, ())
            return await node._write(self.statements.update_state, update) > 0

    async def table_stats(self) -> TableStats:
        try:
            version = await self._fetch_one(self.statements.read_schema_version, ())
            row = await self._fetch_one(self.statements.table_stats, ())
            if row is not None and not row[2] and (row[0] is None or row[0] <= EXACT_COUNT_LIMIT):
                counted = await self._fetch_one(self.statements.count_rows, (EXACT_COUNT_LIMIT + 1,))
                if counted is not None and counted[0] <= EXACT_COUNT_LIMIT:
                    row = (*counted, True)
        except ShardError:
            raise
        except Exception as error:
            raise SchemaError(f"{self.label}: no kvstore schema; run `kvstore shards init` ({error})") from None
        if row is None:
            raise SchemaError(f"{self.label}: no table 'store'; run `kvstore shards init`")
        rows, expiring, exact = row
        return TableStats(
            rows=None if rows is None else int(rows),
            expiring=None if expiring is None else int(expiring),
            exact=bool(exact),
            schema_version=int(version[0]) if version is not None and str(version[0]).isdigit() else None,
        )

    async def ping(self) -> None:
        await self._fetch_one("SELECT 1", ())

    async def replication_position(self) -> str:
        row = await self._fetch_one(self.statements.replication_position, ())
        return str(row[0]) if row is not None else ""

    async def has_replayed(self, position: str) -> bool:
        row = await self._fetch_one(self.statements.has_replayed, (position,))
        return row is not None and bool(row[0])

    async def replica_state(self, primary_position: str) -> ReplicaState:
        row = await self._fetch_one(self.statements.replica_state, (primary_position,))
        if row is None:
            return ReplicaState(caught_up=False, seconds_since_replay=None)
        seconds = None if row[1] is None else float(row[1])
        return ReplicaState(caught_up=bool(row[0]), seconds_since_replay=seconds)

    async def ensure_schema(self) -> None:
        await self._run_ddl(self.dialect.schema)
        try:
            await self._fetch_one(self.statements.probe_columns, ())
        except ShardError:
            raise
        except Exception as error:
            raise SchemaError(f"{self.label}: table 'store' exists but was not created by kvstore ({error})") from None
        await self._run_ddl(self.dialect.indexes)
        await self._write(self.dialect.claim_schema_version, (str(SCHEMA_VERSION),))
        found = await self._schema_version()
        if found is not None and found < SCHEMA_VERSION:  # every step so far only added tables, created above
            await self._write(self.statements.upgrade_schema_version, (str(SCHEMA_VERSION), str(found)))
            found = await self._schema_version()
        if found != SCHEMA_VERSION:
            advice = "upgrade kvstore" if (found or 0) > SCHEMA_VERSION else "check the kvstore_meta table"
            raise SchemaError(
                f"{self.label}: schema version {found} found, this kvstore serves version {SCHEMA_VERSION}; " + advice
            )

    async def _schema_version(self) -> int | None:
        row = await self._fetch_one(self.statements.read_schema_version, ())
        return int(row[0]) if row is not None and str(row[0]).isdigit() else None

    async def _run_ddl(self, statements: Sequence[str]) -> None:
        # Several front ends may start at once; concurrent CREATE ... IF NOT EXISTS can still
        # collide inside the engine's catalog, so a failed attempt is simply tried again.
        for attempt in range(3):
            try:
                for ddl in statements:
                    await self._write(ddl, ())
                return
            except ShardError:
                raise
            except Exception as error:
                if attempt == 2:
                    raise SchemaError(f"{self.label}: cannot create the schema: {error}") from None
                await asyncio.sleep(0.1 * (attempt + 1))

    async def _row(self, sql: str, params: Params) -> Row | None:
        row = await self._write_returning(sql, params)
        return None if row is None else Row.from_columns(int(row[0]), int(row[1]))


def keyed_statement(dialect: Dialect, template: str, count: int) -> str:
    """``template`` with its ``{keys}`` list sized for ``count`` keys (one size fits all with arrays)."""
    return _render_key_list(dialect, template, 1 if dialect.array_keys else count)


@functools.lru_cache(maxsize=512)
def _render_key_list(dialect: Dialect, template: str, count: int) -> str:
    placeholders = [dialect.key_param(), *"?" * (count - 1)] if count else []  # the first key fences
    keys = dialect.key_list.format(keys=", ".join(placeholders))
    return dialect.render(template, keys=keys, random_slot=dialect.random_slot or "NULL")


def key_params(dialect: Dialect, keys: Sequence[str]) -> Params:
    """The parameters that fill a ``{keys}`` list: the keys themselves, or one array of them."""
    return (list(keys),) if dialect.array_keys else tuple(keys)


_ROW_FENCE = " + {fence_term}"


def values_rows(count: int, row: str) -> str:
    """``row, row, …`` for a multi-row ``VALUES`` list (a template). Only the first row keeps its
    fence term: an engine evaluates a ``VALUES`` expression once per row, and one fence answers
    for the whole statement."""
    return ", ".join([row, *[row.replace(_ROW_FENCE, "")] * (count - 1)])


def put_params(writes: Sequence[Put]) -> list[Any]:
    """The parameters of a multi-row upsert whose rows are ``(key, value, ttl_ms, sweep slot)``."""
    return [cell for write in writes for cell in (write.key, write.value, write.ttl_ms, sweep_slot(write.ttl_ms))]


@functools.lru_cache(maxsize=128)
def _import_statement(dialect: Dialect, count: int, overwrite: bool) -> str:
    conflict = dialect.replace_on_conflict if overwrite else dialect.keep_on_conflict
    template = IMPORT_ROWS.replace("{rows}", values_rows(count, "(?, ?, ?, ?" + _ROW_FENCE + ", ?)"))
    return dialect.render(template, conflict=conflict.format(column=dialect.key_column))


def _stored_row(row: tuple[Any, ...]) -> StoredRow:
    key, value, ttl, version, live = row
    return StoredRow(key=key, value=bytes(value), ttl=int(ttl), version=int(version), live=bool(live))


SLOT_SPACE = 1 << 62


def _random_slot() -> int:
    return random.randrange(SLOT_SPACE)


def sweep_slot(ttl_ms: int | None) -> int | None:
    """A random position for the sweeper's index, or None for a persistent row (never sampled).

    A row that already has a slot keeps it (the SQL coalesces), so rewriting an expiring key does
    not move its index entry.
    """
    return None if ttl_ms is None else _random_slot()
