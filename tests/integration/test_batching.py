"""Natural batching on real databases: batches form, and each request keeps its single-request answer.

The shards here have a pool of 2 connections (one write runner, one read runner), so what
arrives while a statement runs deterministically waits for the next batch.
"""

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import pytest
from prometheus_client import REGISTRY

from kvstore.backends.base import Put
from kvstore.backends.mysql import connect_arguments
from kvstore.batching import Attempt
from kvstore.conditions import Precondition
from kvstore.config import parse_settings
from kvstore.errors import ShardTimeout, WriteOutcomeUnknown
from kvstore.router import Router
from kvstore.shard import Shard
from kvstore.store import KeyValueStore
from tests.conftest import empty_database, session_instances
from tests.support import rawdb

UNCONDITIONAL = Precondition()
POISON_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON store WHEN NEW.key = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
    ],
    "postgres": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN IF NEW.key = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON store FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
    "mysql": [
        "CREATE TRIGGER poison BEFORE INSERT ON store FOR EACH ROW BEGIN IF NEW.key = 'poison' THEN"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned row'; END IF; END"
    ],
}


def open_store(backend: str, locations: list[str], tmp_path: Path, **server: Any) -> tuple[Router, KeyValueStore]:
    names = [f"b{uuid.uuid4().hex[:8]}" for _ in locations]  # metric labels of this test's own
    document = {
        "server": {"pool_max_size": 2, "request_timeout_s": 5, **server},
        "shards": [
            {"name": name, "backend": backend, "primary": location}
            for name, location in zip(names, locations, strict=True)
        ],
    }
    settings = parse_settings(document, environ={}, base_dir=tmp_path)
    router = Router(settings)
    return router, KeyValueStore(router, settings.server.request_timeout_s)


@pytest.fixture
async def store(backend: str, fresh_location: str, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    # A 1 s request deadline over statements allowed 3 s, so that a statement stuck behind a lock
    # is still running when the deadline of a request queued behind it passes.
    router, _ = open_store(backend, [fresh_location], tmp_path, request_timeout_s=3)
    await open_all(router)
    yield KeyValueStore(router, 1.0)
    await router.close(5.0)


async def open_all(router: Router) -> None:
    for shard in router.shards.values():
        await shard.open()
        await shard.primary.ensure_schema()


def only_shard(store: KeyValueStore) -> Shard:
    [shard] = store.router.shards.values()
    return shard


def keys_sent(shard: Shard, lane: str) -> tuple[float, float]:
    """``(statements, keys)`` a lane of the shard's primary has sent so far."""
    labels = {"node": shard.primary.label, "lane": lane}
    count = REGISTRY.get_sample_value("kvstore_batch_keys_count", labels) or 0.0
    total = REGISTRY.get_sample_value("kvstore_batch_keys_sum", labels) or 0.0
    return count, total


async def test_concurrent_gets_form_batches_and_share_lookups(store: KeyValueStore) -> None:
    for index in range(20):
        await store.put(f"k{index}", f"v{index}".encode(), None, UNCONDITIONAL)
    keys = [f"k{index % 20}" for index in range(100)] + ["missing"] * 10
    rows = await asyncio.gather(*(store.get(key) for key in keys))
    for key, row in zip(keys, rows, strict=True):
        assert (row.value if row else None) == (None if key == "missing" else f"v{key[1:]}".encode())
    statements, sent = keys_sent(only_shard(store), "read")
    assert statements < 10, "concurrent GETs went out one statement each"
    assert sent <= 21 + 20, f"identical waiting GETs should share one lookup, sent {sent} keys for 110 GETs"


async def test_same_key_twice_applies_in_arrival_order(store: KeyValueStore) -> None:
    results = await asyncio.gather(*(store.put("k", str(n).encode(), None, UNCONDITIONAL) for n in range(6)))
    assert [result.created for result in results] == [True, False, False, False, False, False]
    versions = [result.row.version for result in results if result.row is not None]
    assert versions == sorted(versions) and len(set(versions)) == 6
    row = await store.get("k")
    assert row is not None and row.value == b"5" and row.version == versions[-1]


async def test_conditional_writes_keep_their_turn_among_batched_puts(store: KeyValueStore) -> None:
    first = await store.put("k", b"0", None, UNCONDITIONAL)
    assert first.row is not None
    stale = Precondition(if_version=first.row.version)
    plain, conditional = await asyncio.gather(
        store.put("k", b"1", None, UNCONDITIONAL), store.put("k", b"2", None, stale), return_exceptions=True
    )
    assert not isinstance(plain, BaseException)
    assert type(conditional).__name__ == "PreconditionFailed", "the If-Match write arrived after the PUT"
    row = await store.get("k")
    assert row is not None and row.value == b"1"


async def test_a_refused_row_does_not_fail_its_neighbours(
    store: KeyValueStore, backend: str, fresh_location: str
) -> None:
    for statement in POISON_TRIGGER[backend]:
        await rawdb.execute(backend, fresh_location, statement)
    keys = ["first", *(f"n{index}" for index in range(8)), "poison", *(f"m{index}" for index in range(8))]
    results = await asyncio.gather(
        *(store.put(key, key.encode(), None, UNCONDITIONAL) for key in keys), return_exceptions=True
    )
    failed = [key for key, result in zip(keys, results, strict=True) if isinstance(result, BaseException)]
    assert failed == ["poison"], results
    assert "poisoned row" in str(results[keys.index("poison")])
    statements, sent = keys_sent(only_shard(store), "write")
    assert sent > statements, "the puts were not batched, so this test proves nothing"
    stored = await only_shard(store).primary.get_many(keys)
    assert sorted(stored) == sorted(set(keys) - {"poison"})


@contextlib.asynccontextmanager
async def row_locked(backend: str, location: str, key: str) -> AsyncIterator[None]:
    """Another session holds ``key``'s row lock (SQLite: the whole database's write lock)."""
    if backend == "sqlite":
        connection = sqlite3.connect(location, isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
    elif backend == "postgres":
        pg = await asyncpg.connect(location)
        transaction = pg.transaction()
        await transaction.start()
        await pg.fetch("SELECT 1 FROM store WHERE key = $1 FOR UPDATE", key)
        try:
            yield
        finally:
            await transaction.rollback()
            await pg.close()
    else:
        my = await aiomysql.connect(autocommit=False, **connect_arguments(location))
        async with my.cursor() as cursor:
            await cursor.execute("SELECT 1 FROM store WHERE `key` = %s FOR UPDATE", (key,))
        try:
            yield
        finally:
            await my.rollback()
            my.close()


async def test_a_deadline_passed_in_the_queue_means_not_applied(
    store: KeyValueStore, backend: str, fresh_location: str
) -> None:
    """Behind a lock, a write that was sent says "may have been applied" at its deadline; one that
    was still queued behind the lane's one busy slot says "not applied", and it never is."""
    await store.put("locked", b"0", None, UNCONDITIONAL)
    async with row_locked(backend, fresh_location, "locked"):
        with pytest.raises(WriteOutcomeUnknown, match="may have been applied"):
            await store.put("locked", b"1", None, UNCONDITIONAL)
        blocker = asyncio.create_task(only_shard(store).put(Put("locked", b"2", None), Attempt()))
        await asyncio.sleep(0.1)
        with pytest.raises(ShardTimeout, match="not applied"):
            await store.put("queued", b"q", None, UNCONDITIONAL)
    await blocker
    assert await store.get("queued") is None
    await store.put("after", b"a", None, UNCONDITIONAL)  # the lane serves again


async def test_a_stuck_shard_does_not_hold_up_another(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    locations = [request.getfixturevalue("fresh_location"), *extra_location(backend, request, tmp_path)]
    router, _ = open_store(backend, locations, tmp_path, request_timeout_s=2)
    await open_all(router)
    try:
        stuck, free = router.shards.values()
        key_on = {
            name: next(f"k{i}" for i in range(1000) if router.route(f"k{i}").owner.name == name)
            for name in router.shards
        }
        await stuck.put(Put(key_on[stuck.name], b"0", None), Attempt())
        async with row_locked(backend, locations[0], key_on[stuck.name]):
            burst = [asyncio.create_task(stuck.put(Put(key_on[stuck.name], b"x", None), Attempt())) for _ in range(50)]
            await asyncio.sleep(0.1)
            _, created, _ = await asyncio.wait_for(free.put(Put(key_on[free.name], b"1", None), Attempt()), 1.0)
            assert created
            assert not any(task.done() for task in burst), "the other shard was served while this one is stuck"
        await asyncio.gather(*burst, return_exceptions=True)
    finally:
        await router.close(5.0)


def extra_location(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if backend == "sqlite":
        return [str(tmp_path / "other.db")]
    instance = session_instances(backend, request)[1]
    return [empty_database(instance)]


async def test_concurrent_deletes_form_batches_and_report_each_key(store: KeyValueStore) -> None:
    keys = [f"d{index}" for index in range(12)]
    for key in keys:
        await store.put(key, b"v", None, UNCONDITIONAL)
    before, _ = keys_sent(only_shard(store), "write")
    results = await asyncio.gather(*(store.delete(key, UNCONDITIONAL) for key in [*keys, "missing"]))
    assert [result is not None for result in results] == [True] * 12 + [False]
    statements, _ = keys_sent(only_shard(store), "write")
    assert statements - before < 13, "the deletes went out one statement each"
    assert await only_shard(store).primary.get_many(keys) == {}
