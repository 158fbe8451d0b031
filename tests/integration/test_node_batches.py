"""The node's many-key operations on every engine: one statement, per-row answers as for one key."""

import asyncio

from kvstore.backends import Node
from kvstore.backends.base import Put


async def test_get_many_returns_only_live_rows(node: Node) -> None:
    await node.put("live", b"v1", None)
    await node.put("expiring", b"v2", 60_000)
    await node.put("expired", b"v3", 1)
    await node.put("deleted", b"v4", None)
    assert await node.soft_delete("deleted", None)
    await asyncio.sleep(0.05)
    found = await node.get_many(["live", "expiring", "expired", "deleted", "missing"])
    assert set(found) == {"live", "expiring"}
    assert found["live"].value == b"v1" and found["live"].expires_at_ms is None
    assert found["expiring"].value == b"v2" and found["expiring"].expires_at_ms is not None
    assert found["live"] == await node.get("live")


async def test_put_many_reports_created_or_replaced_per_row(node: Node) -> None:
    """Mixed rows in one statement: each one's flag is its own (the engines' per-row tricks hold)."""
    live, _ = await node.put("b-live", b"old", None)
    await node.put("d-expired", b"old", 1)
    await node.put("f-deleted", b"old", None)
    assert await node.soft_delete("f-deleted", None)
    await node.put("h-live", b"old", 60_000)
    await asyncio.sleep(0.05)
    writes = [
        Put("a-new", b"1", None),
        Put("b-live", b"2", 30_000),
        Put("c-new", b"3", 30_000),
        Put("d-expired", b"4", None),
        Put("e-new", b"", None),
        Put("f-deleted", b"6\x00", None),
        Put("g-new", b"7", None),
        Put("h-live", b"8", None),
    ]
    results = await node.put_many(writes)
    assert [created for _, created in results] == [True, False, True, True, True, True, True, False]
    rows = {write.key: row for write, (row, _) in zip(writes, results, strict=True)}
    assert rows["b-live"].version > live.version
    assert rows["b-live"].expires_at_ms is not None and rows["h-live"].expires_at_ms is None
    stored = await node.get_many([write.key for write in writes])
    for write in writes:
        assert stored[write.key].value == write.value
        assert stored[write.key].version == rows[write.key].version
        assert stored[write.key].expires_at_ms == rows[write.key].expires_at_ms


async def test_put_many_agrees_with_put_on_one_key(node: Node) -> None:
    [(first, created)] = await node.put_many([Put("k", b"1", None)])
    assert created
    [(second, created)] = await node.put_many([Put("k", b"2", None)])
    assert not created and second.version > first.version
    third, created = await node.put("k", b"3", None)
    assert not created and third.version > second.version


async def test_concurrent_overlapping_batches_in_key_order_do_not_deadlock(node: Node) -> None:
    """Sorted batches over the same keys from many connections: all apply, none fails."""
    keys = [f"k{index:03d}" for index in range(40)]

    async def batch(round_: int) -> list[tuple[object, bool]]:
        return await node.put_many([Put(key, str(round_).encode(), None) for key in keys[round_ % 5 :]])

    results = await asyncio.gather(*(batch(round_) for round_ in range(20)))
    assert all(len(result) == len(keys[round_ % 5 :]) for round_, result in enumerate(results))
    versions = await node.get_many(keys)
    assert set(versions) == set(keys)


async def test_delete_many_soft_deletes_the_live_rows_only(node: Node) -> None:
    live, _ = await node.put("a-live", b"1", None)
    await node.put("b-expiring", b"2", 60_000)
    await node.put("c-expired", b"3", 1)
    await node.put("d-deleted", b"4", None)
    assert await node.soft_delete("d-deleted", None)
    await asyncio.sleep(0.05)
    deleted = await node.delete_many(["a-live", "b-expiring", "c-expired", "d-deleted", "e-missing"])
    assert deleted == {"a-live", "b-expiring"}
    assert await node.get_many(["a-live", "b-expiring"]) == {}
    rows = {row.key: row for row in await node.fetch_rows(["a-live", "b-expiring"])}
    assert rows["a-live"].ttl == -1 and rows["a-live"].version > live.version
    assert await node.purge(["a-live", "b-expiring"]) == 2, "tombstones are in the sweeper's sample space"
