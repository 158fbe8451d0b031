"""Bearer tokens and scopes (kvstore/http/auth.py), in process; that tokens stay out of the log is
tested on a real process (tests/e2e/test_security.py)."""

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.asgi import serving, sqlite_settings

READER, WRITER, ADMIN = "reader-secret-0123456789", "writer-secret-0123456789", "admin-secret-0123456789"
TOKENS = [
    {"name": "reader", "token": READER, "scope": "read"},
    {"name": "writer", "token_sha256": hashlib.sha256(WRITER.encode()).hexdigest(), "scope": "write"},
    {"name": "ops", "token": ADMIN, "scope": "admin"},
]


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    directory: Path = tmp_path_factory.mktemp("auth")
    async with serving(sqlite_settings(directory, shards=1, auth={"tokens": TOKENS})) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_requests_without_a_valid_token_get_401(secured: httpx.AsyncClient) -> None:
    for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": f"Basic {READER}"}):
        response = await secured.get("/v1/kv/k", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


async def test_scopes_nest_read_write_admin(secured: httpx.AsyncClient) -> None:
    assert (await secured.put("/v1/kv/k", content=b"v", headers=bearer(READER))).status_code == 403
    assert (await secured.put("/v1/kv/k", content=b"v", headers=bearer(WRITER))).status_code == 201
    assert (await secured.get("/v1/kv/k", headers=bearer(READER))).content == b"v"
    assert (await secured.get("/metrics", headers=bearer(WRITER))).status_code == 403
    assert (await secured.get("/metrics", headers=bearer(ADMIN))).status_code == 200
    assert (await secured.delete("/v1/kv/k", headers=bearer(ADMIN))).status_code == 204
    for open_path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await secured.get(open_path)).status_code == 200


async def test_the_console_is_open_and_its_data_needs_the_read_scope(secured: httpx.AsyncClient) -> None:
    for page in ("/ui", "/ui/console.js"):
        assert (await secured.get(page)).status_code == 200, "the page holds no data: it asks for a token itself"
    for data in ("/v1/status", "/v1/locate/k"):
        assert (await secured.get(data)).status_code == 401
        assert (await secured.get(data, headers=bearer(READER))).status_code == 200


async def test_a_batch_needs_write_scope_only_when_it_writes(secured: httpx.AsyncClient) -> None:
    reads = {"ops": [{"op": "get", "key": "k"}]}
    assert (await secured.post("/v1/batch", json=reads, headers=bearer(READER))).status_code == 200
    assert (await secured.post("/v1/batch", json=reads)).status_code == 401
    writes = {"ops": [{"op": "get", "key": "k"}, {"op": "incr", "key": "n"}]}
    refused = await secured.post("/v1/batch", json=writes, headers=bearer(READER))
    assert refused.status_code == 403 and "'write' is required" in refused.json()["detail"]
    assert (await secured.post("/v1/batch", json=writes, headers=bearer(WRITER))).status_code == 200
    assert (await secured.get("/v1/kv/n", headers=bearer(READER))).content == b"1"  # only the writer's ran
