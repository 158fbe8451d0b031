"""POST /v1/batch (kvstore/http/batch.py over KeyValueStore.batch), in process on two SQLite shards:
each op answered as its single-key request, in order; same-key ops in order; grouping into one
statement per shard and kind; refusals of a whole batch and of single ops."""

import base64
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from kvstore.config import Settings


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@pytest.fixture
def key() -> str:
    return f"batch-{uuid.uuid4().hex}"


async def batch(client: httpx.AsyncClient, *ops: dict[str, object]) -> list[dict[str, object]]:
    response = await client.post("/v1/batch", json={"ops": list(ops)})
    assert response.status_code == 200, response.text
    results: list[dict[str, object]] = response.json()["results"]
    assert len(results) == len(ops)
    return results


async def test_each_op_answers_as_its_single_key_request(client: httpx.AsyncClient, key: str) -> None:
    await client.put(f"/v1/kv/{key}-text", content=b"hello")
    results = await batch(
        client,
        {"op": "put", "key": f"{key}-a", "value_b64": b64(b"\x00one"), "ttl": 60},
        {"op": "get", "key": f"{key}-text"},
        {"op": "get", "key": f"{key}-missing"},
        {"op": "delete", "key": f"{key}-missing"},
        {"op": "incr", "key": f"{key}-n", "by": 41},
        {"op": "incr", "key": f"{key}-text"},
        {"op": "put", "key": f"{key}-text", "if_none_match": "*", "value_b64": b64(b"x")},
        {"op": "put", "key": f"{key}-b", "ttl": "1.5x"},
        {"op": "frobnicate", "key": f"{key}-c"},
        {"op": "get", "key": ""},
        {"op": "get", "key": f"{key}-d", "ttl": 5},
    )
    put, text, missing, not_deleted, counter, not_counter, exists, bad_ttl, bad_op, empty, misplaced = results
    assert put["status"] == 201 and put["key"] == f"{key}-a" and isinstance(put["expires_at"], int)
    assert text["status"] == 200 and text["value_b64"] == b64(b"hello") and text["expires_at"] is None
    stored = await client.get(f"/v1/kv/{key}-text")
    assert stored.headers["etag"] == f'"{text["version"]}"'
    for absent in (missing, not_deleted):
        assert absent["status"] == 404 and absent["error"]["status"] == 404  # type: ignore[index]
    assert counter["status"] == 200 and counter["value"] == 41
    assert not_counter["status"] == 409 and "not a decimal integer" in not_counter["error"]["detail"]  # type: ignore[index]
    assert exists["status"] == 412
    assert bad_ttl["status"] == 400 and "ttl must be" in bad_ttl["error"]["detail"]  # type: ignore[index]
    assert bad_op["status"] == 400 and "op must be one of get, put, delete, incr" in bad_op["error"]["detail"]  # type: ignore[index]
    assert empty["status"] == 400 and "key is empty" in empty["error"]["detail"]  # type: ignore[index]
    assert misplaced["status"] == 400 and "'ttl' is not a field of a get op" in misplaced["error"]["detail"]  # type: ignore[index]
    assert (await client.get(f"/v1/kv/{key}-a")).content == b"\x00one"
    assert (await client.get(f"/v1/kv/{key}-b")).status_code == 404, "an invalid op does not run"


async def test_ops_on_one_key_apply_in_their_order(client: httpx.AsyncClient, key: str) -> None:
    results = await batch(
        client,
        {"op": "put", "key": key, "value_b64": b64(b"first")},
        {"op": "get", "key": key},
        {"op": "put", "key": key, "value_b64": b64(b"second")},
        {"op": "get", "key": key},
        {"op": "delete", "key": key},
        {"op": "get", "key": key},
        {"op": "incr", "key": key},
    )
    assert [result["status"] for result in results] == [201, 200, 200, 200, 204, 404, 200]
    assert [results[1]["value_b64"], results[3]["value_b64"]] == [b64(b"first"), b64(b"second")]
    assert results[6]["value"] == 1


async def test_conditional_ops_check_their_own_version(client: httpx.AsyncClient, key: str) -> None:
    version = (await client.put(f"/v1/kv/{key}", content=b"v1")).json()["version"]
    stale, fresh = await batch(
        client,
        {"op": "put", "key": key, "value_b64": b64(b"lost"), "if_match": version + 1},
        {"op": "delete", "key": f"{key}-other", "if_match": "*"},
    )
    assert stale["status"] == 412 and fresh["status"] == 412
    [replaced] = await batch(client, {"op": "put", "key": key, "value_b64": b64(b"v2"), "if_match": f'"{version}"'})
    assert replaced["status"] == 200 and replaced["version"] > version  # type: ignore[operator]


def statements(settings: Settings, op: str) -> float:
    return sum(
        REGISTRY.get_sample_value("kvstore_shard_query_duration_seconds_count", {"shard": shard.name, "op": op}) or 0.0
        for shard in settings.shards
    )


async def test_ops_are_grouped_per_shard_and_kind(client: httpx.AsyncClient, settings: Settings, key: str) -> None:
    keys = [f"{key}/{index:03}" for index in range(100)]
    before = statements(settings, "batch_put"), statements(settings, "batch_get")
    puts = await batch(client, *({"op": "put", "key": k, "value_b64": b64(k.encode())} for k in keys))
    gets = await batch(client, *({"op": "get", "key": k} for k in keys))
    assert {result["status"] for result in puts} == {201}
    assert [result["value_b64"] for result in gets] == [b64(k.encode()) for k in keys]
    after = statements(settings, "batch_put"), statements(settings, "batch_get")
    assert after[0] - before[0] == len(settings.shards) and after[1] - before[1] == len(settings.shards)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"not json", 400, "the body is not JSON"),
        (b"[]", 400, "the body must be a JSON object"),
        (b'{"ops": []}', 400, "a batch has 1 to 1000 ops, this one 0"),
        (b'{"ops": {}}', 400, 'the body must be a JSON object {"ops": [...]}'),
        (b'{"ops": [], "atomic": true}', 400, 'the body must be a JSON object {"ops": [...]}'),
    ],
)
async def test_a_malformed_batch_is_refused_whole(
    client: httpx.AsyncClient, body: bytes, status: int, detail: str
) -> None:
    response = await client.post("/v1/batch", content=body)
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


async def test_limits_on_ops_and_bytes(client: httpx.AsyncClient) -> None:
    too_many = await client.post("/v1/batch", json={"ops": [{"op": "get", "key": "k"}] * 1001})
    assert too_many.status_code == 400 and "1 to 1000 ops, this one 1001" in too_many.json()["detail"]
    huge = await client.post("/v1/batch", content=b'{"ops": ["' + b"x" * (16 * 1024 * 1024) + b'"]}')
    assert huge.status_code == 413 and "split the ops" in huge.json()["detail"]
    big_value = b64(b"x" * 65537)  # over the test server's max_value_bytes
    [result] = (
        await client.post("/v1/batch", json={"ops": [{"op": "put", "key": "k", "value_b64": big_value}]})
    ).json()["results"]
    assert result["status"] == 413
