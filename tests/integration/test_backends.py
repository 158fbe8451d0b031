"""The backend contract under the API, on every engine: what the rows in `store` really hold."""

from kvstore.backends import Node
from kvstore.backends.base import PERSISTENT_TTL
from tests.support import rawdb


async def row(backend: str, location: str, key: str) -> tuple[int, int, int | None] | None:
    rows = await rawdb.execute(backend, location, "SELECT ttl, version, sweep_slot FROM store WHERE key = ?", key)
    return rows[0] if rows else None  # type: ignore[return-value]


async def test_soft_delete_leaves_the_row_with_ttl_minus_one(node: Node, backend: str, fresh_location: str) -> None:
    created = await node.create("doomed", b"v", None)
    assert created is not None
    assert await node.soft_delete("doomed", None)
    stored = await row(backend, fresh_location, "doomed")
    assert stored is not None
    ttl, version, slot = stored
    assert ttl == -1 and version > created.version
    assert slot is not None, "a soft-deleted row is in the sweeper's sample space"
    assert await node.get("doomed") is None


async def test_persistent_rows_store_max_bigint_and_no_sweep_slot(
    node: Node, backend: str, fresh_location: str
) -> None:
    await node.create("forever", b"v", None)
    assert await row(backend, fresh_location, "forever") == (PERSISTENT_TTL, (await node.get("forever")).version, None)  # type: ignore[union-attr]
    touched = await node.touch("forever", 60_000, None)
    assert touched is not None and touched.expires_at_ms is not None
    stored = await row(backend, fresh_location, "forever")
    assert stored is not None and stored[0] == touched.expires_at_ms and stored[2] is not None
    persisted = await node.touch("forever", None, None)
    assert persisted is not None and persisted.expires_at_ms is None
    assert (await row(backend, fresh_location, "forever"))[2] is None  # type: ignore[index]
