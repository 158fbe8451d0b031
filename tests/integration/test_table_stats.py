"""``Node.table_stats`` on every engine: exact on SQLite and on small tables, the engine's estimates
for big ones elsewhere."""

import time

import pytest

from kvstore.backends import Node, PoolSettings, create_node
from kvstore.backends.base import PERSISTENT_TTL, SCHEMA_VERSION, TableStats
from kvstore.backends.sql import EXACT_COUNT_LIMIT
from kvstore.errors import SchemaError
from tests.support import rawdb


def rows_with_ttls(ttls: list[int]) -> list[tuple[str, bytes, int, int, int | None]]:
    return [(f"k{i}", b"v", ttl, 1, None if ttl == PERSISTENT_TTL else i + 1) for i, ttl in enumerate(ttls)]


async def test_a_small_table_is_counted_exactly_even_before_it_is_analyzed(
    node: Node, backend: str, fresh_location: str
) -> None:
    now_ms = int(time.time() * 1000)
    # 40 persistent, 30 live with an expiry, 20 expired, 10 soft-deleted; never analyzed.
    ttls = [PERSISTENT_TTL] * 40 + [now_ms + 3_600_000] * 30 + [now_ms - 1] * 20 + [-1] * 10
    await rawdb.insert_rows(backend, fresh_location, rows_with_ttls(ttls))
    stats = await node.table_stats()
    assert (stats.rows, stats.expiring, stats.exact) == (100, 60, True)
    assert stats.schema_version == SCHEMA_VERSION


async def test_a_big_table_gets_the_engines_estimate(node: Node, backend: str, fresh_location: str) -> None:
    """SQLite keeps no statistics: its counts stay exact however big the table."""
    ttls = [PERSISTENT_TTL, int(time.time() * 1000) + 3_600_000] * (EXACT_COUNT_LIMIT // 2 + 500)
    await rawdb.insert_rows(backend, fresh_location, rows_with_ttls(ttls))
    if backend == "sqlite":
        assert await node.table_stats() == TableStats(len(ttls), len(ttls) // 2, True, SCHEMA_VERSION)
        return
    if backend == "postgres":
        assert (await node.table_stats()).rows is None, "never analyzed, too big to count: no figure"
    await rawdb.execute(backend, fresh_location, "ANALYZE store" if backend == "postgres" else "ANALYZE TABLE store")
    stats = await node.table_stats()
    assert not stats.exact and stats.rows is not None
    assert 0.5 * len(ttls) <= stats.rows <= 2 * len(ttls), stats  # InnoDB samples pages
    if backend == "postgres":
        assert stats.expiring is not None and abs(stats.expiring - len(ttls) // 2) <= len(ttls) // 20


async def test_a_database_without_the_schema_is_named(backend: str, fresh_location: str) -> None:
    bare = create_node(backend, "t", "primary", fresh_location, PoolSettings(1, 2, 2.0, 10.0))
    await bare.open()
    try:
        with pytest.raises(SchemaError, match=r"t/primary: no kvstore schema; run `kvstore shards init`"):
            await bare.table_stats()
    finally:
        await bare.close(5.0)
