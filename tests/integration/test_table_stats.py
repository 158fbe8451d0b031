"""``Node.table_stats`` on every engine: exact on SQLite, the engine's estimates elsewhere."""

import time

import pytest

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import PERSISTENT_TTL, SCHEMA_VERSION
from kvstore.errors import SchemaError
from tests.support import rawdb


async def test_counts_rows_and_rows_with_an_expiry(node: Node, backend: str, fresh_location: str) -> None:
    now_ms = int(time.time() * 1000)
    # 40 persistent, 30 live with an expiry, 20 expired, 10 soft-deleted.
    ttls = [PERSISTENT_TTL] * 40 + [now_ms + 3_600_000] * 30 + [now_ms - 1] * 20 + [-1] * 10
    rows = [(f"k{i}", b"v", ttl, 1, None if ttl == PERSISTENT_TTL else i + 1) for i, ttl in enumerate(ttls)]
    await rawdb.insert_rows(backend, fresh_location, rows)
    if backend == "postgres":
        assert (await node.table_stats()).rows is None, "never analyzed: no figure rather than a full count"
        await rawdb.execute(backend, fresh_location, "ANALYZE store")
    elif backend == "mysql":
        await rawdb.execute(backend, fresh_location, "ANALYZE TABLE store")
    stats = await node.table_stats()
    assert stats.schema_version == SCHEMA_VERSION
    assert stats.exact == (backend == "sqlite")
    if backend == "mysql":
        assert stats.rows is not None and 50 <= stats.rows <= 200  # InnoDB samples pages
        assert stats.expiring is None
    else:
        assert (stats.rows, stats.expiring) == (100, 60)


async def test_a_database_without_the_schema_is_named(backend: str, fresh_location: str) -> None:
    bare = create_node(backend, "t", "primary", fresh_location, PoolSettings(1, 2, 2.0, 10.0))
    await bare.open()
    try:
        with pytest.raises(SchemaError, match=r"t/primary: no kvstore schema; run `kvstore shards init`"):
            await bare.table_stats()
    finally:
        await bare.close(5.0)
