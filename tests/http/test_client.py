"""kvstore.client's AsyncClient against the app in process (two SQLite shards): every operation, its
typed results and errors, and the compare-and-set loop under real concurrency. The same client
against real `kvstore serve` processes on every backend: tests/e2e/test_client.py."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvstore.client import (
    AsyncClient,
    BadRequest,
    Compare,
    Conflict,
    CrossShard,
    Delete,
    Entry,
    Forbidden,
    Get,
    Incr,
    NotFound,
    PreconditionFailed,
    Put,
    Unauthorized,
    ValueTooLarge,
)
from tests.support.asgi import BASE_URL, TEST_SERVER, app_transport, sqlite_settings

WRITER, READER = "writer-secret-0123456789", "reader-secret-0123456789"


@pytest.fixture(scope="module")
async def kv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncClient]:
    async with (
        app_transport(sqlite_settings(tmp_path_factory.mktemp("client"))) as transport,
        AsyncClient(BASE_URL, transport=transport) as client,
    ):
        yield client


async def test_put_get_and_the_entry_they_describe(kv: AsyncClient) -> None:
    written = await kv.put("dir/../odd key?.%", "hello", ttl=30)
    assert written.created and written.key == "dir/../odd key?.%"
    entry = await kv.get("dir/../odd key?.%")
    assert entry == Entry("dir/../odd key?.%", b"hello", written.version, written.expires_at_ms)
    assert entry.text == "hello" and entry.etag == f'"{written.version}"'
    assert written.expires_at_ms is not None
    assert 29_000 < written.expires_at_ms - time.time() * 1000 <= 30_000

    blob = bytes(range(256)) * 4 + b"\x00\r\n"
    replaced = await kv.put("dir/../odd key?.%", blob)
    assert not replaced.created and replaced.version > written.version and replaced.expires_at_ms is None
    assert (await kv.get("dir/../odd key?.%", strong=True)).value == blob


async def test_expiry_ttl_expire_and_persist(kv: AsyncClient) -> None:
    await kv.put("t/key", b"v")
    assert await kv.ttl("t/key") is None
    expiring = await kv.expire("t/key", 20.5)
    remaining = await kv.ttl("t/key")
    assert expiring.expires_at_ms is not None and remaining is not None and 19 < remaining <= 20.5
    persisted = await kv.persist("t/key", if_match=expiring.version)
    assert persisted.expires_at_ms is None and persisted.version > expiring.version
    assert (await kv.get("t/key")).value == b"v"
    await kv.expire("t/key", 0.05)
    await asyncio.sleep(0.1)
    for call in (kv.get("t/key"), kv.ttl("t/key"), kv.expire("t/key", 5), kv.persist("t/key")):
        with pytest.raises(NotFound):
            await call


async def test_delete_says_whether_there_was_a_live_value(kv: AsyncClient) -> None:
    written = await kv.put("d/key", b"v")
    with pytest.raises(PreconditionFailed):
        await kv.delete("d/key", if_match=written.version - 1)
    assert await kv.delete("d/key", if_match=written.etag) is True
    assert await kv.delete("d/key") is False
    with pytest.raises(NotFound) as missing:
        await kv.get("d/key")
    assert isinstance(missing.value, LookupError)
    assert missing.value.status == 404 and "no live value" in missing.value.detail
    assert missing.value.request_id


async def test_conditional_puts(kv: AsyncClient) -> None:
    first = await kv.put("c/key", b"1", if_absent=True)
    with pytest.raises(PreconditionFailed) as taken:
        await kv.put("c/key", b"2", if_absent=True)
    assert taken.value.problem["status"] == 412
    with pytest.raises(PreconditionFailed):
        await kv.put("c/key", b"2", if_match=first.version + 1)
    second = await kv.put("c/key", b"2", if_match=first.version)
    assert (await kv.put("c/key", b"3", if_match="*")).version > second.version
    with pytest.raises(PreconditionFailed):
        await kv.put("c/absent", b"x", if_match="*")
    with pytest.raises(ValueError, match="exclude"):
        await kv.put("c/key", b"x", if_match=1, if_absent=True)


async def test_refusals_are_typed_and_carry_the_servers_detail(kv: AsyncClient) -> None:
    with pytest.raises(BadRequest) as overlong:
        await kv.get("k" * 256)
    assert overlong.value.status == 400 and "255" in overlong.value.detail
    with pytest.raises(ValueTooLarge) as large:
        await kv.put("big", b"x" * (TEST_SERVER["max_value_bytes"] + 1))
    assert large.value.status == 413 and isinstance(large.value, BadRequest)
    with pytest.raises(ValueError, match="positive"):
        await kv.put("k", b"v", ttl=0)


async def test_update_is_a_compare_and_set_loop_that_loses_no_increment(kv: AsyncClient) -> None:
    calls = 0

    def increment(current: bytes | None) -> bytes:
        nonlocal calls
        calls += 1
        return str(int(current or b"0") + 1).encode()

    await asyncio.gather(*(kv.update("counter", increment) for _ in range(12)))
    assert (await kv.get("counter")).value == b"12"
    assert calls > 12, "concurrent updaters raced and retried"
    assert (await kv.update("counter", lambda current: (current or b"") + b"!", ttl=60)).expires_at_ms is not None
    assert (await kv.get("counter")).value == b"12!"


async def test_tokens_and_scopes(tmp_path: Path) -> None:
    tokens = [{"name": "w", "token": WRITER, "scope": "write"}, {"name": "r", "token": READER, "scope": "read"}]
    async with app_transport(sqlite_settings(tmp_path, shards=1, auth={"tokens": tokens})) as transport:
        async with AsyncClient(BASE_URL, token=WRITER, transport=transport) as writer:
            await writer.put("k", b"v")
        async with AsyncClient(BASE_URL, token=READER, transport=transport) as reader:
            assert (await reader.get("k")).value == b"v"
            with pytest.raises(Forbidden) as forbidden:
                await reader.put("k", b"w")
            assert forbidden.value.status == 403
        async with AsyncClient(BASE_URL, transport=transport) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.get("k")
        assert WRITER not in repr(AsyncClient(BASE_URL, token=WRITER))


async def test_list_follows_cursors_in_byte_order_both_ways(kv: AsyncClient) -> None:
    keys = [f"l/{index:02d}" for index in range(23)] + ["l/Z", "l/ä", "l/a"]
    for key in keys:
        await kv.put(key, key.encode(), ttl=60 if key.endswith("1") else None)
    await kv.put("l-outside", b"x")
    expected = sorted(keys, key=str.encode)
    listed = [item async for item in kv.list("l/", page_size=4)]
    assert [item.key for item in listed] == expected
    assert all(item.value is None and item.version > 0 for item in listed)
    assert [item.expires_at_ms is not None for item in listed] == [key.endswith("1") for key in expected]
    backwards = [item async for item in kv.list("l/", reverse=True, values=True, page_size=5)]
    assert [(item.key, item.value) for item in backwards] == [(key, key.encode()) for key in reversed(expected)]
    after = [item.key async for item in kv.list("l/", start_after="l/20", page_size=2)]
    assert after == expected[expected.index("l/20") + 1 :]
    page = await kv.list_page("l/", page_size=3)
    assert len(page.items) == 3 and page.cursor is not None
    assert [item.key for item in (await kv.list_page(cursor=page.cursor, page_size=3)).items] == expected[3:6]
    with pytest.raises(BadRequest, match="cursor"):
        await kv.list_page(cursor="forged")


async def test_incr_counts_atomically_and_refuses_text(kv: AsyncClient) -> None:
    assert (await kv.incr("n/hits")).value == 1
    await kv.expire("n/hits", 60)
    counted = await kv.incr("n/hits", by=-5)
    assert counted.value == -4 and counted.expires_at_ms is not None, "an increment keeps the expiry"
    results = await asyncio.gather(*(kv.incr("n/hits", by=2) for _ in range(20)))
    assert sorted(result.value for result in results) == list(range(-2, 38, 2))
    assert (await kv.get("n/hits")).value == b"36"
    await kv.put("n/text", b"ten")
    with pytest.raises(Conflict) as conflict:
        await kv.incr("n/text")
    assert conflict.value.status == 409
    await kv.put("n/big", str(2**63 - 1))
    with pytest.raises(Conflict):
        await kv.incr("n/big")


async def test_batch_answers_each_op_as_its_own_request(kv: AsyncClient) -> None:
    await kv.put("b/old", b"old")
    await kv.put("b/text", b"ten")
    results = await kv.batch(
        [
            Put("b/new", "fresh", ttl=30),
            Get("b/old"),
            Get("b/missing"),
            Delete("b/old", if_match=1),
            Incr("b/n", by=3),
            Incr("b/text"),
            Put("b/new", b"again", if_absent=True),
            Get("b/new"),
        ]
    )
    assert [result.status for result in results] == [201, 200, 404, 412, 200, 409, 412, 200]
    created, old, missing, stale, counted, text, taken, read = results
    assert created.ok and created.expires_at_ms is not None and created.version
    assert old.value == b"old" and counted.value == 3 and read.value == b"fresh"
    assert isinstance(missing.error, NotFound) and isinstance(stale.error, PreconditionFailed)
    assert isinstance(text.error, Conflict) and isinstance(taken.error, PreconditionFailed)
    with pytest.raises(NotFound):
        missing.result()
    assert read.result() is read
    assert await kv.batch([]) == []


async def test_txn_runs_one_branch_atomically_on_one_shard(kv: AsyncClient) -> None:
    balance = await kv.put("{acct}/balance", b"100")
    moved = await kv.txn(
        compare=[Compare("{acct}/balance", version=balance.version), Compare("{acct}/lock", absent=True)],
        success=[Put("{acct}/balance", b"70"), Incr("{acct}/moves"), Get("{acct}/balance")],
        failure=[Get("{acct}/balance")],
    )
    assert moved.succeeded and [result.status for result in moved.results] == [200, 200, 200]
    assert moved.results[1].value == 1 and moved.results[2].value == b"70"
    stale = await kv.txn(compare=[Compare("{acct}/balance", version=balance.version)], failure=[Get("{acct}/balance")])
    assert not stale.succeeded and stale.results[0].value == b"70"
    with pytest.raises(PreconditionFailed) as rolled_back:
        await kv.txn(success=[Put("{acct}/balance", b"0"), Put("{acct}/moves", b"x", if_absent=True)])
    assert rolled_back.value.problem["op"] == 1 and (await kv.get("{acct}/balance")).value == b"70"
    keys = [f"spread/{index}" for index in range(8)]  # two shards: surely not all on one
    with pytest.raises(CrossShard) as spread:
        await kv.txn(success=[Put(key, b"v") for key in keys])
    assert spread.value.status == 422 and spread.value.shards == ["s0", "s1"]
    with pytest.raises(ValueError, match="exactly one"):
        await kv.txn(compare=[Compare("k", version=1, exists=True)])
