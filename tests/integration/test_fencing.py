"""Fenced statements: a node routed by one ring epoch is refused by a shard whose ring record has
another, in the same statement, and nothing it asked for is applied (``backends/sql.py``).

Each test takes the ``node`` fixture (an open primary on a fresh database of every engine).
"""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kvstore.backends import Node
from kvstore.backends.base import RING_STATE, Put, StoredRow
from kvstore.errors import StaleRing

# Every key statement a front end runs, as (name, call) on a node holding "k" = b"v".
KEY_CALLS: list[tuple[str, Callable[[Node], Awaitable[Any]]]] = [
    ("get", lambda node: node.get("k")),
    ("get_many", lambda node: node.get_many(["k", "other"])),
    ("put", lambda node: node.put("k", b"stale", None)),
    ("put_many", lambda node: node.put_many([Put("k", b"stale", None), Put("new", b"stale", None)])),
    ("create", lambda node: node.create("new", b"stale", None)),
    ("replace", lambda node: node.replace("k", b"stale", None, None)),
    ("touch", lambda node: node.touch("k", 1_000, None)),
    ("soft_delete", lambda node: node.soft_delete("k", None)),
    ("delete_many", lambda node: node.delete_many(["k"])),
    ("incr", lambda node: node.incr("counter", 1)),
    ("list_range", lambda node: node.list_range("", None, descending=False, limit=10)),
    ("fetch_rows", lambda node: node.fetch_rows(["k"])),
    ("import_rows", lambda node: node.import_rows([StoredRow("new", b"stale", -1, 1, live=False)], overwrite=True)),
    ("purge", lambda node: node.purge(["k"])),
    ("remove", lambda node: node.remove(["k"])),
]


async def publish_epoch(node: Node, epoch: int) -> None:
    found = await node.read_state(RING_STATE)
    expected = None if found is None else found[0]
    assert await node.write_state(RING_STATE, f"record {epoch}", epoch, expected)


async def assert_untouched(node: Node) -> None:
    """Only "k" = b"v" is stored, as it was written (read unfenced)."""
    node.routed_epoch = None
    rows = await node.list_range("", None, descending=False, limit=10)
    assert [(row.key, row.live) for row in rows] == [("k", True)]
    assert (await node.get("k")).value == b"v"  # type: ignore[union-attr]


@pytest.mark.parametrize("name,call", KEY_CALLS, ids=[name for name, _ in KEY_CALLS])
async def test_a_statement_routed_by_an_older_epoch_is_refused_and_applies_nothing(
    node: Node, name: str, call: Callable[[Node], Awaitable[Any]]
) -> None:
    await node.put("k", b"v", None)
    await publish_epoch(node, 7)
    node.routed_epoch = 6
    with pytest.raises(StaleRing) as refused:
        await call(node)
    assert "refused ring epoch 6" in str(refused.value)
    await assert_untouched(node)


async def test_a_statement_routed_by_a_newer_epoch_is_refused_too(node: Node) -> None:
    """A front end that read the next epoch from another shard waits until this one has it."""
    await node.put("k", b"v", None)
    await publish_epoch(node, 3)
    node.routed_epoch = 4
    with pytest.raises(StaleRing):
        await node.put("k", b"stale", None)
    await assert_untouched(node)


async def test_the_shards_own_epoch_is_served_and_admin_tools_are_never_fenced(node: Node) -> None:
    await node.put("k", b"v", None)
    await publish_epoch(node, 2)
    node.routed_epoch = 2
    await node.put("k", b"routed", None)
    assert (await node.get("k")).value == b"routed"  # type: ignore[union-attr]
    node.routed_epoch = None  # the copier, cleanup, `kvstore kv`: they route by no ring
    await node.put("k", b"unfenced", None)
    assert (await node.get("k")).value == b"unfenced"  # type: ignore[union-attr]


async def test_a_shard_without_a_ring_record_is_at_epoch_zero(node: Node) -> None:
    node.routed_epoch = 0
    await node.put("k", b"v", None)
    node.routed_epoch = 1
    with pytest.raises(StaleRing):
        await node.put("k", b"stale", None)
    await assert_untouched(node)


async def test_a_statement_that_matches_no_row_is_refused_too(node: Node) -> None:
    """The fence does not depend on a row: a stale read of a missing key must not answer "absent"."""
    await publish_epoch(node, 5)
    node.routed_epoch = 4
    with pytest.raises(StaleRing):
        await node.get("missing")
    with pytest.raises(StaleRing):
        await node.get_many(["missing", "also missing"])
    with pytest.raises(StaleRing):
        await node.soft_delete("missing", None)
    with pytest.raises(StaleRing):
        await node.touch("missing", None, None)
    with pytest.raises(StaleRing):
        await node.list_range("a", "b", descending=True, limit=5)
