"""Fenced statements: a node routed by one ring epoch is refused by a shard whose ring record has
another, in the same statement, and nothing it asked for is applied (``backends/sql.py``); and
the front end's side: the store routes a refused operation again, and the router adopts a new
epoch only once the operations routed by the old one have ended.

The node tests take the ``node`` fixture (an open primary on a fresh database of every engine).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kvstore.backends import Node
from kvstore.backends.base import RING_STATE, Put, StoredRow
from kvstore.conditions import Precondition
from kvstore.errors import StaleRing
from kvstore.ring_record import RECORD_NAME
from kvstore.router import Router
from kvstore.store import KeyValueStore
from tests.support.asgi import backend_settings

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


# -- the front end's side: the routing gate and the store's second attempt --------------------


@pytest.fixture
async def fenced_store(backend: str, fresh_location: str, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    router = Router(backend_settings(backend, [fresh_location], tmp_path), fenced=True)
    for shard in router.shards.values():
        await shard.open()
        await shard.primary.ensure_schema()
    try:
        yield KeyValueStore(router, request_timeout_s=5.0)
    finally:
        await router.close(5.0)


def refusals(shard: str) -> float:
    return REGISTRY.get_sample_value("kvstore_ring_refusals_total", {"shard": shard}) or 0.0


async def publish_record(router: Router, epoch: int) -> None:
    """The router's own ring, published at ``epoch`` on every shard (as `kvstore reshard` writes records)."""
    record = replace(router.record, epoch=epoch)
    for shard in router.shards.values():
        found = await shard.primary.read_state(RECORD_NAME)
        assert await shard.primary.write_state(RECORD_NAME, record.encode(), epoch, None if found is None else found[0])


async def test_an_operation_refused_by_a_newer_ring_is_routed_again_unseen(fenced_store: KeyValueStore) -> None:
    router = fenced_store.router
    shard = next(iter(router.shards))
    refused_before = refusals(shard)
    await publish_record(router, 3)  # the router still routes by epoch 0: every shard refuses it
    written = await fenced_store.put("k", b"v", None, Precondition())
    assert written.created
    assert router.topology.epoch == 3
    assert refusals(shard) == refused_before + 1
    assert (await fenced_store.get("k")).value == b"v"  # type: ignore[union-attr]


async def test_a_new_epoch_waits_for_the_operations_routed_by_the_old_one(fenced_store: KeyValueStore) -> None:
    router = fenced_store.router
    node = next(iter(router.shards.values())).primary
    await publish_record(router, 1)
    async with router.routing():  # an operation routed by epoch 0, still running
        adopting = asyncio.ensure_future(router.refresh())
        await asyncio.sleep(0.2)
        assert not adopting.done() and node.routed_epoch == 0 and router.topology.epoch == 0
        waiting = asyncio.ensure_future(fenced_store.get("k"))  # a new operation waits at the gate
        await asyncio.sleep(0.05)
        assert not waiting.done()
    await adopting
    assert node.routed_epoch == 1 and router.topology.epoch == 1
    assert await waiting is None
