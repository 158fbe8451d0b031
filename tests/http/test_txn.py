"""POST /v1/txn (kvstore/http/txn.py over KeyValueStore.txn), in process on two SQLite shards:
the branch the compares choose, all-or-nothing ops, one shard only, refusals."""

import base64
import uuid

import httpx
import pytest


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@pytest.fixture
def tag() -> str:
    return "{" + uuid.uuid4().hex[:10] + "}"


async def txn(client: httpx.AsyncClient, **document: object) -> dict[str, object]:
    response = await client.post("/v1/txn", json=document)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_the_compares_choose_the_branch(client: httpx.AsyncClient, tag: str) -> None:
    version = (await client.put(f"/v1/kv/{tag}a", content=b"1")).json()["version"]
    compare = [{"key": f"{tag}a", "version": version}, {"key": f"{tag}b", "absent": True}]
    success = [
        {"op": "put", "key": f"{tag}b", "value_b64": b64(b"claimed")},
        {"op": "incr", "key": f"{tag}n"},
        {"op": "get", "key": f"{tag}b"},
    ]
    failure = [{"op": "get", "key": f"{tag}b"}]
    first = await txn(client, compare=compare, success=success, failure=failure)
    assert first["succeeded"] is True
    assert [result["status"] for result in first["results"]] == [201, 200, 200]  # type: ignore[attr-defined]
    assert first["results"][2]["value_b64"] == b64(b"claimed")  # type: ignore[index]
    second = await txn(client, compare=compare, success=success, failure=failure)  # b exists now
    assert second["succeeded"] is False and second["results"] == [  # type: ignore[comparison-overlap]
        {
            "status": 200,
            "key": f"{tag}b",
            "version": first["results"][0]["version"],
            "expires_at": None,  # type: ignore[index]
            "value_b64": b64(b"claimed"),
        }
    ]
    assert (await client.get(f"/v1/kv/{tag}n")).content == b"1"
    exists = await txn(
        client, compare=[{"key": f"{tag}a", "exists": True}], success=[{"op": "delete", "key": f"{tag}a"}]
    )
    assert exists["succeeded"] is True and exists["results"][0]["status"] == 204  # type: ignore[index]
    assert (await client.get(f"/v1/kv/{tag}a")).status_code == 404


async def test_an_op_that_fails_applies_nothing(client: httpx.AsyncClient, tag: str) -> None:
    await client.put(f"/v1/kv/{tag}text", content=b"not a number")
    response = await client.post(
        "/v1/txn",
        json={
            "success": [{"op": "put", "key": f"{tag}x", "value_b64": b64(b"1")}, {"op": "incr", "key": f"{tag}text"}]
        },
    )
    assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["branch"] == "success" and problem["op"] == 1 and "nothing was applied" in problem["detail"]
    assert (await client.get(f"/v1/kv/{tag}x")).status_code == 404
    stale = await client.post(
        "/v1/txn",
        json={"success": [{"op": "incr", "key": f"{tag}n"}, {"op": "delete", "key": f"{tag}x", "if_match": "*"}]},
    )
    assert stale.status_code == 412 and (await client.get(f"/v1/kv/{tag}n")).status_code == 404


async def test_keys_on_two_shards_are_refused_with_their_shards(client: httpx.AsyncClient) -> None:
    keys = [f"spread-{index}" for index in range(20)]  # on two shards, some of them land on each
    response = await client.post("/v1/txn", json={"success": [{"op": "incr", "key": key} for key in keys]})
    assert response.status_code == 422
    assert response.json()["shards"] == ["s0", "s1"] and "common hash tag" in response.json()["detail"]
    assert {(await client.get(f"/v1/kv/{key}")).status_code for key in keys} == {404}


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ({}, "a transaction has 1 to 1000 compares and ops, this one 0"),
        ({"if": []}, "'if' is not a field of a transaction"),
        ({"compare": [{"key": "k"}], "success": []}, "compare 0: give exactly one of version, absent, exists"),
        ({"compare": [{"key": "k", "version": "1"}]}, "compare 0: version must be an integer"),
        ({"compare": [{"key": "k", "absent": False}]}, "compare 0: absent must be true"),
        ({"success": [{"op": "put"}]}, "op 0 of the success branch: key must be a string"),
        ({"failure": {"op": "get"}}, "failure must be a list"),
    ],
)
async def test_a_malformed_transaction_is_refused(
    client: httpx.AsyncClient, document: dict[str, object], detail: str
) -> None:
    response = await client.post("/v1/txn", json=document)
    assert response.status_code == 400 and detail in response.json()["detail"], response.json()
