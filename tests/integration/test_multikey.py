"""Counters, batches and transactions through the whole front end (in process) on every engine."""

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kvstore.router import Router
from kvstore.store import KeyValueStore
from tests.support.asgi import backend_settings, serving

CLIENTS, INCREMENTS = 50, 100


@pytest.fixture
async def client(backend: str, fresh_location: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(backend_settings(backend, [fresh_location], tmp_path)) as client:
        yield client


@pytest.fixture
async def store(backend: str, fresh_location: str, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    settings = backend_settings(backend, [fresh_location], tmp_path)
    router = Router(settings)
    for shard in router.shards.values():  # no ring watch: the config's ring is the ring
        await shard.open()
        await shard.primary.ensure_schema()
    yield KeyValueStore(router, settings.server.request_timeout_s)
    await router.close(5.0)


async def test_concurrent_increments_leave_exactly_their_sum(store: KeyValueStore) -> None:
    """50 clients x 100 increments (the store's, below HTTP: the statement is what is under test)."""

    async def count() -> None:
        for _ in range(INCREMENTS):
            await store.incr("hits", 1)

    await asyncio.gather(*(count() for _ in range(CLIENTS)))
    row = await store.get("hits", strong=True)
    assert row is not None and row.value == str(CLIENTS * INCREMENTS).encode()


async def test_an_increment_answers_the_new_value_and_refuses_what_is_no_counter(client: httpx.AsyncClient) -> None:
    first = await client.patch("/v1/kv/c", params={"incr": "-5"})
    assert first.status_code == 200 and first.json()["value"] == -5 and first.json()["expires_at"] is None
    assert first.headers["etag"] == f'"{first.json()["version"]}"'
    await client.put("/v1/kv/text", content=b"hello")
    refused = await client.patch("/v1/kv/text", params={"incr": "1"})
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert "not a decimal integer" in refused.json()["detail"]
    await client.put("/v1/kv/big", content=str(2**63 - 1).encode())
    overflow = await client.patch("/v1/kv/big", params={"incr": "1"})
    assert overflow.status_code == 409 and "signed 64-bit range" in overflow.json()["detail"]
    assert (await client.get("/v1/kv/big")).content == str(2**63 - 1).encode()


async def test_a_batch_answers_each_op_on_every_engine(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/old", content=b"x")
    ops = [{"op": "put", "key": f"k{index:02}", "value_b64": "dg==", "ttl": 60} for index in range(40)]
    ops += [{"op": "get", "key": f"k{index:02}"} for index in range(0, 40, 2)]
    ops += [{"op": "delete", "key": "old"}, {"op": "delete", "key": "never"}, {"op": "incr", "key": "n", "by": -2}]
    ops += [{"op": "put", "key": "old", "value_b64": "", "if_none_match": "*"}]  # after the delete: creates
    response = await client.post("/v1/batch", json={"ops": ops})
    assert response.status_code == 200, response.text
    statuses = [result["status"] for result in response.json()["results"]]
    assert statuses == [201] * 40 + [200] * 20 + [204, 404, 200, 201]
    listed = (await client.get("/v1/kv", params={"prefix": "k", "values": "true"})).json()
    assert [item["key"] for item in listed["items"]] == [f"k{index:02}" for index in range(40)]
    assert {item["value_b64"] for item in listed["items"]} == {"dg=="}


async def test_compare_and_swap_transactions_lose_no_update(client: httpx.AsyncClient) -> None:
    """10 clients x 10 increments, each read, then a txn that writes only if the version is unchanged."""

    async def add_ten() -> int:
        retries = 0
        for _ in range(10):
            while True:
                current = await client.get("/v1/kv/{acct}balance", params={"consistency": "strong"})
                version = int(current.headers["etag"].strip('"'))
                value = int(current.content) + 1
                answer = await client.post(
                    "/v1/txn",
                    json={
                        "compare": [{"key": "{acct}balance", "version": version}],
                        "success": [
                            {
                                "op": "put",
                                "key": "{acct}balance",
                                "value_b64": base64.b64encode(b"%d" % value).decode(),
                            },
                            {"op": "incr", "key": "{acct}writes"},
                        ],
                    },
                )
                assert answer.status_code == 200, answer.text
                if answer.json()["succeeded"]:
                    break
                retries += 1
        return retries

    await client.put("/v1/kv/{acct}balance", content=b"0")
    retries = await asyncio.gather(*(add_ten() for _ in range(10)))
    assert (await client.get("/v1/kv/{acct}balance")).content == b"100"
    assert (await client.get("/v1/kv/{acct}writes")).content == b"100", f"{sum(retries)} retries"
