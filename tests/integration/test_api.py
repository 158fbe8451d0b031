"""The HTTP API v1 contract, on every backend, against a real `kvstore serve` and real databases."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support import rawdb
from tests.support.server import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


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


def test_put_get_head_delete_round_trip(client: httpx.Client) -> None:
    key = new_key()
    created = client.put(url(key), content=b"hello")
    assert created.status_code == 201
    assert created.json() == {"key": key, "version": created.json()["version"], "expires_at": None}
    assert created.headers["etag"] == f'"{created.json()["version"]}"'

    got = client.get(url(key))
    assert got.status_code == 200
    assert got.content == b"hello"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["etag"] == created.headers["etag"]
    assert "expires-at" not in got.headers

    head = client.head(url(key))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == created.headers["etag"]

    assert client.delete(url(key)).status_code == 204
    assert_problem(client.get(url(key)), 404)
    assert client.head(url(key)).status_code == 404
    assert_problem(client.delete(url(key)), 404)


def test_second_put_replaces_with_a_higher_version(client: httpx.Client) -> None:
    key = new_key()
    first = client.put(url(key), content=b"1")
    second = client.put(url(key), content=b"2")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["version"] > first.json()["version"]
    assert client.get(url(key)).content == b"2"


@pytest.mark.parametrize("value", [bytes(range(256)) * 4, b"", b"\x00" * 100, "ünïcødé".encode()])
def test_values_are_binary_safe(client: httpx.Client, value: bytes) -> None:
    key = new_key()
    assert client.put(url(key), content=value).status_code == 201
    assert client.get(url(key)).content == value


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
def test_keys_with_unicode_slashes_and_reserved_characters(client: httpx.Client, key: str) -> None:
    key = key + "-" + uuid.uuid4().hex[:8] if len(key) < 240 else key[:223] + uuid.uuid4().hex[:32]
    assert client.put(url(key), content=key.encode()).status_code == 201
    assert client.get(url(key)).content == key.encode()


def test_keys_differing_in_case_or_trailing_space_are_distinct(client: httpx.Client) -> None:
    base = new_key()
    variants = [base, base.upper(), base + " ", base + "  "]
    for variant in variants:
        assert client.put(url(variant), content=variant.encode()).status_code == 201
    for variant in variants:
        assert client.get(url(variant)).content == variant.encode()


def test_encoded_slash_is_the_same_key_as_a_literal_slash(client: httpx.Client) -> None:
    key = new_key("dir") + "/file"
    client.put(url(key), content=b"v")
    assert client.get("/v1/kv/" + key.replace("/", "%2F")).content == b"v"


def test_ttl_expires_on_the_database_clock(client: httpx.Client) -> None:
    key = new_key()
    before = now_ms()
    response = client.put(url(key) + "?ttl=0.6", content=b"short")
    assert response.status_code == 201
    expires_at = response.json()["expires_at"]
    assert before + 600 - 1000 <= expires_at <= now_ms() + 600 + 1000
    head = client.head(url(key))
    assert head.status_code == 200 and int(head.headers["expires-at"]) == expires_at
    time.sleep(max(0, (expires_at - now_ms()) / 1000) + 0.3)
    assert_problem(client.get(url(key)), 404)
    assert_problem(client.delete(url(key)), 404)
    again = client.put(url(key), content=b"new life")
    assert again.status_code == 201, "a PUT over an expired key creates it anew"


def test_patch_sets_and_removes_the_expiry(client: httpx.Client) -> None:
    key = new_key()
    put = client.put(url(key), content=b"v")
    patched = client.patch(url(key) + "?ttl=100")
    assert patched.status_code == 200
    assert patched.json()["expires_at"] is not None
    assert patched.json()["version"] > put.json()["version"]
    assert client.get(url(key)).headers["expires-at"] == str(patched.json()["expires_at"])
    persisted = client.patch(url(key) + "?persist=true")
    assert persisted.status_code == 200 and persisted.json()["expires_at"] is None
    got = client.get(url(key))
    assert got.content == b"v" and "expires-at" not in got.headers


def test_patch_errors(client: httpx.Client) -> None:
    key = new_key()
    assert_problem(client.patch(url(key) + "?ttl=5"), 404)
    client.put(url(key), content=b"v")
    for query in ("", "?ttl=5&persist=true", "?persist=false", "?ttl=-3", "?ttl=abc"):
        assert_problem(client.patch(url(key) + query), 400)


def test_create_only_with_if_none_match(client: httpx.Client) -> None:
    key = new_key()
    assert client.put(url(key), content=b"1", headers={"If-None-Match": "*"}).status_code == 201
    assert_problem(client.put(url(key), content=b"2", headers={"If-None-Match": "*"}), 412)
    assert client.get(url(key)).content == b"1"
    client.delete(url(key))
    assert client.put(url(key), content=b"3", headers={"If-None-Match": "*"}).status_code == 201


def test_if_match_on_put_patch_delete(client: httpx.Client) -> None:
    key = new_key()
    etag = client.put(url(key), content=b"1").headers["etag"]
    assert_problem(client.put(url(key), content=b"x", headers={"If-Match": '"1"'}), 412)
    replaced = client.put(url(key), content=b"2", headers={"If-Match": etag})
    assert replaced.status_code == 200
    assert_problem(client.put(url(key), content=b"x", headers={"If-Match": etag}), 412)
    etag = replaced.headers["etag"]
    assert_problem(client.patch(url(key) + "?ttl=50", headers={"If-Match": '"1"'}), 412)
    etag = client.patch(url(key) + "?ttl=50", headers={"If-Match": etag}).headers["etag"]
    assert_problem(client.delete(url(key), headers={"If-Match": '"1"'}), 412)
    assert client.delete(url(key), headers={"If-Match": etag}).status_code == 204
    assert_problem(client.put(url(key), content=b"x", headers={"If-Match": "*"}), 412)
    assert_problem(client.delete(url(key), headers={"If-Match": etag}), 412)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match_star_on_a_missing_key_says_it_is_not_live(client: httpx.Client, method: str) -> None:
    """RFC 9110 13.1.1: "*" is false when there is no current representation."""
    key = new_key()
    query = "?ttl=5" if method == "PATCH" else ""
    content = b"v" if method == "PUT" else None
    body = assert_problem(client.request(method, url(key) + query, content=content, headers={"If-Match": "*"}), 412)
    assert "If-Match: *" in str(body["detail"]) and "no live value" in str(body["detail"])
    assert "version" not in str(body["detail"])
    assert_problem(client.get(url(key)), 404)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_evaluate_if_match(client: httpx.Client, method: str) -> None:
    """RFC 9110 13.1.1: a read whose If-Match does not match answers 412, not the value."""
    key = new_key()
    etag = client.put(url(key), content=b"v").headers["etag"]
    assert client.request(method, url(key), headers={"If-Match": etag}).status_code == 200
    assert client.request(method, url(key), headers={"If-Match": "*"}).status_code == 200
    assert client.request(method, url(key), headers={"If-Match": '"1"'}).status_code == 412
    missing = new_key()
    assert client.request(method, url(missing), headers={"If-Match": "*"}).status_code == 412
    assert client.request(method, url(missing), headers={"If-Match": etag}).status_code == 412
    assert client.request(method, url(missing)).status_code == 404
    if method == "GET":
        assert_problem(client.get(url(key), headers={"If-Match": '"1"'}), 412)
        both = client.get(url(key), headers={"If-Match": etag, "If-None-Match": etag})
        assert both.status_code == 304, "If-Match held, then If-None-Match is evaluated"


def test_patch_with_a_body_is_refused_and_changes_nothing(client: httpx.Client) -> None:
    key = new_key()
    etag = client.put(url(key), content=b"old").headers["etag"]
    body = assert_problem(client.patch(url(key) + "?ttl=50", content=b"new"), 400)
    assert "PUT" in str(body["detail"]) and "untouched" in str(body["detail"])

    def chunks() -> Iterator[bytes]:
        yield b"new"

    assert_problem(client.patch(url(key) + "?persist=true", content=chunks()), 400)
    got = client.get(url(key))
    assert (got.content, got.headers["etag"], "expires-at" in got.headers) == (b"old", etag, False)
    assert client.patch(url(key) + "?ttl=50", content=b"").status_code == 200


def test_get_if_none_match_answers_not_modified(client: httpx.Client) -> None:
    key = new_key()
    etag = client.put(url(key), content=b"v").headers["etag"]
    response = client.get(url(key), headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.headers["etag"] == etag
    assert client.get(url(key), headers={"If-None-Match": '"1"'}).status_code == 200


def test_old_etag_never_matches_a_recreated_key(client: httpx.Client, backend: str, shard_locations: list[str]) -> None:
    """No ABA: not after a soft delete, and not after the row is hard-deleted and re-created."""
    key = new_key()
    old = client.put(url(key), content=b"old")
    client.delete(url(key))
    after_soft_delete = client.put(url(key), content=b"new")
    assert after_soft_delete.status_code == 201
    assert after_soft_delete.json()["version"] > old.json()["version"]
    for location in shard_locations:
        asyncio.run(rawdb.execute(backend, location, "DELETE FROM store WHERE key = ?", key))
    assert_problem(client.get(url(key)), 404)
    time.sleep(0.002)
    recreated = client.put(url(key), content=b"newer")
    assert recreated.status_code == 201
    assert recreated.json()["version"] > after_soft_delete.json()["version"]
    for stale in (old, after_soft_delete):
        assert_problem(client.put(url(key), content=b"x", headers={"If-Match": stale.headers["etag"]}), 412)
    assert client.get(url(key)).content == b"newer"


async def test_concurrent_if_match_writers_exactly_one_wins_per_version(server: ServerProcess) -> None:
    key, writers, rounds = new_key(), 16, 5
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=httpx.Limits(max_connections=64)) as client:
        etag = (await client.put(url(key), content=b"start")).headers["etag"]
        for round_number in range(rounds):
            values = [f"r{round_number}-w{w}".encode() for w in range(writers)]
            responses = await asyncio.gather(
                *(client.put(url(key), content=value, headers={"If-Match": etag}) for value in values)
            )
            statuses = sorted(response.status_code for response in responses)
            assert statuses == [200] + [412] * (writers - 1)
            winner = next(r for r, v in zip(responses, values, strict=True) if r.status_code == 200)
            current = await client.get(url(key))
            assert current.headers["etag"] == winner.headers["etag"]
            assert current.content == values[responses.index(winner)]
            etag = winner.headers["etag"]


async def test_concurrent_creators_exactly_one_creates(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=httpx.Limits(max_connections=64)) as client:
        for _ in range(5):
            key = new_key()
            responses = await asyncio.gather(*(client.put(url(key), content=b"%d" % i) for i in range(12)))
            statuses = sorted(response.status_code for response in responses)
            assert statuses == [200] * 11 + [201]
            versions = [response.json()["version"] for response in responses]
            assert len(set(versions)) == len(versions), "every write got its own version"


async def test_concurrent_patch_and_delete_are_atomic(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
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
def test_bad_requests_get_problem_details(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    body = assert_problem(response, status)
    if status == 405:
        allowed = response.headers["allow"]
        assert method in str(body["detail"]) and allowed in str(body["detail"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
@pytest.mark.parametrize("path", ["/v1/kv", "/v1", "/healthz/"])
def test_paths_without_an_endpoint_are_problems_not_redirects(client: httpx.Client, method: str, path: str) -> None:
    body = assert_problem(client.request(method, path, content=b"v"), 404)
    assert "/v1/kv/{key}" in str(body["detail"])


def test_bad_conditional_headers(client: httpx.Client) -> None:
    key = new_key()
    client.put(url(key), content=b"v")
    assert_problem(client.put(url(key), content=b"v", headers={"If-Match": "unquoted"}), 400)
    assert_problem(client.put(url(key), content=b"v", headers={"If-None-Match": '"3"'}), 400)
    assert_problem(client.delete(url(key), headers={"If-None-Match": "*"}), 400)


def test_value_too_large(client: httpx.Client) -> None:
    key = new_key()
    assert_problem(client.put(url(key), content=b"x" * 65537), 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 8192

    assert_problem(client.put(url(key), content=chunks()), 413)
    assert_problem(client.get(url(key)), 404)
    assert client.put(url(key), content=b"x" * 65536).status_code == 201


def test_health_readiness_metrics_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "shards": {"s0": "up", "s1": "up"}, "ring": {"epoch": 0, "phase": "stable"}}
    client.get(url(new_key()))
    metrics = client.get("/metrics").text
    assert 'kvstore_http_requests_total{op="get",status="404"}' in metrics
    assert "kvstore_http_request_duration_seconds_bucket" in metrics
    assert 'kvstore_shard_query_duration_seconds_count{op="get",shard=' in metrics
    assert "kvstore_pool_connections_in_use" in metrics
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]["/v1/kv/{key}"]) >= {"get", "put", "patch", "delete"}


@pytest.mark.parametrize(
    "sent", ["abc123", "550e8400-e29b-41d4-a716-446655440000", "my-req-123", "trace_id:7.b-9", "x" * 128]
)
def test_requests_carry_the_clients_request_id(client: httpx.Client, sent: str) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["", "x" * 129, "has space", "semi;colon", 'quote"', "ünï"])
def test_an_odd_request_id_is_replaced_by_a_generated_one(client: httpx.Client, sent: str) -> None:
    generated = client.get("/healthz", headers={"X-Request-ID": sent.encode()}).headers["x-request-id"]
    assert generated != sent and len(generated) == 32


def test_two_front_ends_see_each_others_writes(server: ServerProcess, other_server: ServerProcess) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            key = new_key()
            client.put(server.url + url(key), content=b"from A")
            assert client.get(other_server.url + url(key)).content == b"from A"
            client.delete(other_server.url + url(key))
            assert client.get(server.url + url(key)).status_code == 404


def test_keys_never_appear_in_the_server_log(client: httpx.Client, server: ServerProcess) -> None:
    key = new_key("secret-key-name")
    client.put(url(key), content=b"v")
    client.get(url(key))
    client.get(url(key) + "?bad=1")
    assert key not in server.log()


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
def test_sql_injection_is_stored_and_returned_verbatim(client: httpx.Client, attack: str) -> None:
    key = attack + "-" + uuid.uuid4().hex[:8]
    assert client.put(url(key), content=attack.encode()).status_code == 201
    assert client.get(url(key)).content == attack.encode()
    assert client.put(url(key) + "?ttl=100", content=b"second").status_code == 200
    assert client.patch(url(key) + "?persist=true").status_code == 200
    assert client.get(url(key)).content == b"second"
    assert client.delete(url(key)).status_code == 204
    assert client.get(url(key)).status_code == 404
    assert client.get("/readyz").status_code == 200, "the shards and their tables are still there"
