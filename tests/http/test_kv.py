"""The /v1/kv resource (kvstore/http/kv.py), in process: statuses, headers, bodies and problem details.

What the rows hold on each engine is the backend contract's business (tests/integration/test_node_contract.py);
here the shards are SQLite and the subject is the HTTP layer's logic over them.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest

from kvstore.config import Settings
from tests.support import rawdb


def new_key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def url(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


async def test_put_get_head_delete_round_trip(client: httpx.AsyncClient) -> None:
    key = new_key()
    created = await client.put(url(key), content=b"hello")
    assert created.status_code == 201
    assert created.json() == {"key": key, "version": created.json()["version"], "expires_at": None}
    assert created.headers["etag"] == f'"{created.json()["version"]}"'

    got = await client.get(url(key))
    assert got.status_code == 200
    assert got.content == b"hello"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["etag"] == created.headers["etag"]
    assert "expires-at" not in got.headers

    head = await client.head(url(key))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == created.headers["etag"]

    assert (await client.delete(url(key))).status_code == 204
    assert_problem(await client.get(url(key)), 404)
    assert (await client.head(url(key))).status_code == 404
    assert_problem(await client.delete(url(key)), 404)


async def test_second_put_replaces_with_a_higher_version(client: httpx.AsyncClient) -> None:
    key = new_key()
    first = await client.put(url(key), content=b"1")
    second = await client.put(url(key), content=b"2")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["version"] > first.json()["version"]
    assert (await client.get(url(key))).content == b"2"


@pytest.mark.parametrize("value", [bytes(range(256)) * 4, b"", b"\x00" * 100, "ünïcødé".encode()])
async def test_values_are_binary_safe(client: httpx.AsyncClient, value: bytes) -> None:
    key = new_key()
    assert (await client.put(url(key), content=value)).status_code == 201
    assert (await client.get(url(key))).content == value


@pytest.mark.parametrize(
    "key",
    [
        "ключ/with/slashes",
        "emoji-🔑",
        "a b+c&d=e?f#g",
        "%2F-literal-percent",
        "x" * 240,
        "Key",
        "key ",
        "new\nline\r\t",
    ],
)
async def test_keys_with_unicode_slashes_and_reserved_characters(client: httpx.AsyncClient, key: str) -> None:
    key = key + "-" + uuid.uuid4().hex[:8] if len(key) < 240 else key[:223] + uuid.uuid4().hex[:32]
    assert (await client.put(url(key), content=key.encode())).status_code == 201
    assert (await client.get(url(key))).content == key.encode()


async def test_keys_differing_in_case_or_trailing_space_are_distinct(client: httpx.AsyncClient) -> None:
    base = new_key()
    variants = [base, base.upper(), base + " ", base + "  "]
    for variant in variants:
        assert (await client.put(url(variant), content=variant.encode())).status_code == 201
    for variant in variants:
        assert (await client.get(url(variant))).content == variant.encode()


async def test_encoded_slash_is_the_same_key_as_a_literal_slash(client: httpx.AsyncClient) -> None:
    key = new_key("dir") + "/file"
    await client.put(url(key), content=b"v")
    assert (await client.get("/v1/kv/" + key.replace("/", "%2F"))).content == b"v"


async def test_ttl_expires_and_is_reported_as_an_absolute_time(client: httpx.AsyncClient) -> None:
    key = new_key()
    before = now_ms()
    response = await client.put(url(key) + "?ttl=0.3", content=b"short")
    assert response.status_code == 201
    expires_at = response.json()["expires_at"]
    assert before + 300 - 1000 <= expires_at <= now_ms() + 300 + 1000
    head = await client.head(url(key))
    assert head.status_code == 200 and int(head.headers["expires-at"]) == expires_at
    await asyncio.sleep(max(0, (expires_at - now_ms()) / 1000) + 0.1)
    assert_problem(await client.get(url(key)), 404)
    assert_problem(await client.delete(url(key)), 404)
    again = await client.put(url(key), content=b"new life")
    assert again.status_code == 201, "a PUT over an expired key creates it anew"


async def test_patch_sets_and_removes_the_expiry(client: httpx.AsyncClient) -> None:
    key = new_key()
    put = await client.put(url(key), content=b"v")
    patched = await client.patch(url(key) + "?ttl=100")
    assert patched.status_code == 200
    assert patched.json()["expires_at"] is not None
    assert patched.json()["version"] > put.json()["version"]
    assert (await client.get(url(key))).headers["expires-at"] == str(patched.json()["expires_at"])
    persisted = await client.patch(url(key) + "?persist=true")
    assert persisted.status_code == 200 and persisted.json()["expires_at"] is None
    got = await client.get(url(key))
    assert got.content == b"v" and "expires-at" not in got.headers


async def test_patch_errors(client: httpx.AsyncClient) -> None:
    key = new_key()
    assert_problem(await client.patch(url(key) + "?ttl=5"), 404)
    await client.put(url(key), content=b"v")
    for query in ("", "?ttl=5&persist=true", "?persist=false", "?ttl=-3", "?ttl=abc"):
        assert_problem(await client.patch(url(key) + query), 400)


async def test_create_only_with_if_none_match(client: httpx.AsyncClient) -> None:
    key = new_key()
    assert (await client.put(url(key), content=b"1", headers={"If-None-Match": "*"})).status_code == 201
    assert_problem(await client.put(url(key), content=b"2", headers={"If-None-Match": "*"}), 412)
    assert (await client.get(url(key))).content == b"1"
    await client.delete(url(key))
    assert (await client.put(url(key), content=b"3", headers={"If-None-Match": "*"})).status_code == 201


async def test_if_match_on_put_patch_delete(client: httpx.AsyncClient) -> None:
    key = new_key()
    etag = (await client.put(url(key), content=b"1")).headers["etag"]
    assert_problem(await client.put(url(key), content=b"x", headers={"If-Match": '"1"'}), 412)
    replaced = await client.put(url(key), content=b"2", headers={"If-Match": etag})
    assert replaced.status_code == 200
    assert_problem(await client.put(url(key), content=b"x", headers={"If-Match": etag}), 412)
    etag = replaced.headers["etag"]
    assert_problem(await client.patch(url(key) + "?ttl=50", headers={"If-Match": '"1"'}), 412)
    etag = (await client.patch(url(key) + "?ttl=50", headers={"If-Match": etag})).headers["etag"]
    assert_problem(await client.delete(url(key), headers={"If-Match": '"1"'}), 412)
    assert (await client.delete(url(key), headers={"If-Match": etag})).status_code == 204
    assert_problem(await client.put(url(key), content=b"x", headers={"If-Match": "*"}), 412)
    assert_problem(await client.delete(url(key), headers={"If-Match": etag}), 412)


async def test_get_if_none_match_answers_not_modified(client: httpx.AsyncClient) -> None:
    key = new_key()
    etag = (await client.put(url(key), content=b"v")).headers["etag"]
    response = await client.get(url(key), headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.headers["etag"] == etag
    assert (await client.get(url(key), headers={"If-None-Match": '"1"'})).status_code == 200


async def test_old_etag_never_matches_a_recreated_key(client: httpx.AsyncClient, settings: Settings) -> None:
    """No ABA: not after a soft delete, and not after the row is hard-deleted and re-created."""
    key = new_key()
    old = await client.put(url(key), content=b"old")
    await client.delete(url(key))
    after_soft_delete = await client.put(url(key), content=b"new")
    assert after_soft_delete.status_code == 201
    assert after_soft_delete.json()["version"] > old.json()["version"]
    for shard in settings.shards:
        await rawdb.execute(shard.backend, shard.primary, "DELETE FROM store WHERE key = ?", key)
    assert_problem(await client.get(url(key)), 404)
    recreated = await client.put(url(key), content=b"newer")
    assert recreated.status_code == 201
    assert recreated.json()["version"] > after_soft_delete.json()["version"]
    for stale in (old, after_soft_delete):
        assert_problem(await client.put(url(key), content=b"x", headers={"If-Match": stale.headers["etag"]}), 412)
    assert (await client.get(url(key))).content == b"newer"


async def test_concurrent_if_match_writers_get_one_200_and_412s(client: httpx.AsyncClient) -> None:
    key, writers = new_key(), 16
    etag = (await client.put(url(key), content=b"start")).headers["etag"]
    for round_number in range(3):
        values = [f"r{round_number}-w{w}".encode() for w in range(writers)]
        responses = await asyncio.gather(
            *(client.put(url(key), content=value, headers={"If-Match": etag}) for value in values)
        )
        assert sorted(response.status_code for response in responses) == [200] + [412] * (writers - 1)
        winner = next(r for r in responses if r.status_code == 200)
        current = await client.get(url(key))
        assert current.headers["etag"] == winner.headers["etag"]
        assert current.content == values[responses.index(winner)]
        etag = winner.headers["etag"]


async def test_concurrent_puts_get_one_201_and_200s(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        key = new_key()
        responses = await asyncio.gather(*(client.put(url(key), content=b"%d" % i) for i in range(12)))
        assert sorted(response.status_code for response in responses) == [200] * 11 + [201]
        versions = [response.json()["version"] for response in responses]
        assert len(set(versions)) == len(versions), "every write got its own version"


async def test_concurrent_conditional_patch_and_delete_get_one_success(client: httpx.AsyncClient) -> None:
    key = new_key()
    etag = (await client.put(url(key), content=b"v")).headers["etag"]
    responses = await asyncio.gather(
        *(client.delete(url(key), headers={"If-Match": etag}) for _ in range(8)),
        *(client.patch(url(key) + "?ttl=9", headers={"If-Match": etag}) for _ in range(8)),
    )
    assert sorted(r.status_code for r in responses).count(412) == 15


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/v1/kv/k?ttl=0", 400),
        ("PUT", "/v1/kv/k?ttl=1.0001", 400),
        ("PUT", "/v1/kv/k?tll=5", 400),
        ("PUT", "/v1/kv/k?ttl=5&ttl=6", 400),
        ("GET", "/v1/kv/k?x=1", 400),
        ("GET", "/v1/kv/", 400),
        ("GET", "/v1/kv/" + "x" * 256, 400),
        ("GET", "/v1/kv/%FF%FE", 400),
        ("GET", "/v1/kv/a%00b", 400),
        ("POST", "/v1/kv/k", 405),
        ("GET", "/v2/kv/k", 404),
        ("DELETE", "/healthz", 405),
    ],
)
async def test_bad_requests_get_problem_details(client: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    response = await client.request(method, path)
    body = assert_problem(response, status)
    if status == 405:
        allowed = response.headers["allow"]
        assert method in str(body["detail"]) and allowed in str(body["detail"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
@pytest.mark.parametrize("path", ["/v1/kvs", "/v1", "/healthz/"])
async def test_paths_without_an_endpoint_are_problems_not_redirects(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    body = assert_problem(await client.request(method, path, content=b"v"), 404)
    assert "/v1/kv/{key}" in str(body["detail"])


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_if_match_star_on_a_missing_key_says_it_is_not_live(client: httpx.AsyncClient, method: str) -> None:
    """RFC 9110 13.1.1: "*" is false when there is no current representation."""
    key = new_key()
    query = "?ttl=5" if method == "PATCH" else ""
    content = b"v" if method == "PUT" else None
    response = await client.request(method, url(key) + query, content=content, headers={"If-Match": "*"})
    body = assert_problem(response, 412)
    assert "If-Match: *" in str(body["detail"]) and "no live value" in str(body["detail"])
    assert "version" not in str(body["detail"])
    assert_problem(await client.get(url(key)), 404)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_reads_evaluate_if_match(client: httpx.AsyncClient, method: str) -> None:
    """RFC 9110 13.1.1: a read whose If-Match does not match answers 412, not the value."""
    key = new_key()
    etag = (await client.put(url(key), content=b"v")).headers["etag"]

    async def status(target: str, **headers: str) -> int:
        return (await client.request(method, url(target), headers=headers)).status_code

    assert await status(key, **{"If-Match": etag}) == 200
    assert await status(key, **{"If-Match": "*"}) == 200
    assert await status(key, **{"If-Match": '"1"'}) == 412
    missing = new_key()
    assert await status(missing, **{"If-Match": "*"}) == 412
    assert await status(missing, **{"If-Match": etag}) == 412
    assert await status(missing) == 404
    if method == "GET":
        assert_problem(await client.get(url(key), headers={"If-Match": '"1"'}), 412)
        both = await client.get(url(key), headers={"If-Match": etag, "If-None-Match": etag})
        assert both.status_code == 304, "If-Match held, then If-None-Match is evaluated"


async def test_patch_with_a_body_is_refused_and_changes_nothing(client: httpx.AsyncClient) -> None:
    key = new_key()
    etag = (await client.put(url(key), content=b"old")).headers["etag"]
    body = assert_problem(await client.patch(url(key) + "?ttl=50", content=b"new"), 400)
    assert "PUT" in str(body["detail"]) and "untouched" in str(body["detail"])

    async def chunks() -> AsyncIterator[bytes]:
        yield b"new"

    assert_problem(await client.patch(url(key) + "?persist=true", content=chunks()), 400)
    got = await client.get(url(key))
    assert (got.content, got.headers["etag"], "expires-at" in got.headers) == (b"old", etag, False)
    assert (await client.patch(url(key) + "?ttl=50", content=b"")).status_code == 200


async def test_bad_conditional_headers(client: httpx.AsyncClient) -> None:
    key = new_key()
    await client.put(url(key), content=b"v")
    assert_problem(await client.put(url(key), content=b"v", headers={"If-Match": "unquoted"}), 400)
    assert_problem(await client.put(url(key), content=b"v", headers={"If-None-Match": '"3"'}), 400)
    assert_problem(await client.delete(url(key), headers={"If-None-Match": "*"}), 400)


async def test_value_too_large(client: httpx.AsyncClient) -> None:
    key = new_key()
    assert_problem(await client.put(url(key), content=b"x" * 65537), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 8192

    assert_problem(await client.put(url(key), content=chunks()), 413)
    assert_problem(await client.get(url(key)), 404)
    assert (await client.put(url(key), content=b"x" * 65536)).status_code == 201


INJECTIONS = [
    "'; DROP TABLE store; --",
    '" OR 1=1 --',
    "`key`) VALUES ('x'",
    "$1 $2 %s %(key)s ? :key",
    "\\'; SELECT pg_sleep(10); --",
    "key' AND ttl > 0 UNION SELECT value FROM kvstore_meta --",
    "@kv_ttl := 0; SELECT ROW_COUNT()",
]


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_sql_injection_is_stored_and_returned_verbatim(client: httpx.AsyncClient, attack: str) -> None:
    key = attack + "-" + uuid.uuid4().hex[:8]
    assert (await client.put(url(key), content=attack.encode())).status_code == 201
    assert (await client.get(url(key))).content == attack.encode()
    assert (await client.put(url(key) + "?ttl=100", content=b"second")).status_code == 200
    assert (await client.patch(url(key) + "?persist=true")).status_code == 200
    assert (await client.get(url(key))).content == b"second"
    assert (await client.delete(url(key))).status_code == 204
    assert (await client.get(url(key))).status_code == 404
    assert (await client.get("/readyz")).status_code == 200, "the shards and their tables are still there"


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"incr": "1.5"}, "incr must be a signed 64-bit decimal integer"),
        ({"incr": "+1"}, "incr must be a signed 64-bit decimal integer"),
        ({"incr": str(2**63)}, "incr must fit a signed 64-bit integer"),
        ({"incr": "1", "ttl": "5"}, "PATCH takes exactly one of ?ttl=SECONDS, ?persist=true or ?incr=N"),
    ],
)
async def test_bad_increments_are_refused(client: httpx.AsyncClient, params: dict[str, str], detail: str) -> None:
    body = assert_problem(await client.patch(url(new_key()), params=params), 400)
    assert detail in str(body["detail"])


async def test_an_increment_takes_no_precondition_and_no_body(client: httpx.AsyncClient) -> None:
    key = new_key()
    conditional = await client.patch(url(key), params={"incr": "1"}, headers={"If-Match": "*"})
    assert "takes no If-Match" in str(assert_problem(conditional, 400)["detail"])
    with_body = await client.patch(url(key), params={"incr": "1"}, content=b"5")
    assert "takes no body" in str(assert_problem(with_body, 400)["detail"])
    assert (await client.get(url(key))).status_code == 404
