"""Counters, batches and transactions through the whole front end (in process) on every engine."""

import asyncio
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
    for shard in router.shards.values():  # no ring watch: the router keeps no lease
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
