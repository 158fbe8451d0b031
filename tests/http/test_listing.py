"""GET /v1/kv (kvstore/http/listing.py over kvstore/listing.py), in process on two SQLite shards:
byte order across shards, cursors both ways, dead rows skipped with the work per page bounded,
values and their byte budget, and every refusal a problem+json 400."""

import base64
import uuid
from urllib.parse import quote

import httpx
import pytest

from kvstore.config import Settings
from kvstore.listing import VALUE_BUDGET_BYTES
from tests.support import rawdb


def url(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="")


async def put_all(client: httpx.AsyncClient, keys: list[str], ttl: str | None = None) -> None:
    params = {} if ttl is None else {"ttl": ttl}
    for key in keys:
        response = await client.put(url(key), content=key.encode(), params=params)
        assert response.status_code == 201, response.text


async def walk(client: httpx.AsyncClient, **params: str) -> tuple[list[str], int]:
    """Every key of a listing, following cursors; and how many pages it took."""
    keys: list[str] = []
    pages = 0
    response = await client.get("/v1/kv", params=params)
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        page = response.json()
        pages += 1
        keys += [item["key"] for item in page["items"]]
        if page["next"] is None:
            return keys, pages
        more = {name: value for name, value in params.items() if name in ("limit", "values")}
        response = await client.get("/v1/kv", params={**more, "cursor": page["next"]})


@pytest.fixture
def prefix() -> str:
    return f"list-{uuid.uuid4().hex[:8]}/"


async def test_keys_come_in_byte_order_across_shards_once_each_both_ways(
    client: httpx.AsyncClient, prefix: str
) -> None:
    # Byte order of UTF-8: "Z" < "a" < "é" < "🙂"; shards s0 and s1 each hold some of them.
    names = ["a", "Z", "é", "🙂", "b/1", "b/2", "ab", "a b", *(f"n{index:03}" for index in range(40))]
    keys = [prefix + name for name in names]
    await put_all(client, keys)
    in_order = sorted(keys, key=str.encode)
    forward, pages = await walk(client, prefix=prefix, limit="7")
    assert forward == in_order and pages >= len(keys) // 7
    backward, _ = await walk(client, prefix=prefix, limit="5", reverse="true")
    assert backward == in_order[::-1]
    whole, pages = await walk(client, prefix=prefix)
    assert whole == in_order and pages == 1
    after, _ = await walk(client, prefix=prefix, start_after=prefix + "b/1")
    assert after == [key for key in in_order if key.encode() > (prefix + "b/1").encode()]
    before, _ = await walk(client, prefix=prefix, start_after=prefix + "b/1", reverse="true")
    assert before == [key for key in in_order if key.encode() < (prefix + "b/1").encode()][::-1]
    nested, _ = await walk(client, prefix=prefix + "b/")
    assert nested == [prefix + "b/1", prefix + "b/2"]


async def test_items_carry_version_and_expiry_and_values_on_request(client: httpx.AsyncClient, prefix: str) -> None:
    written = await client.put(url(prefix + "v"), content=b"\x00\xffbinary", params={"ttl": "60"})
    page = (await client.get("/v1/kv", params={"prefix": prefix, "values": "true"})).json()
    assert page == {
        "items": [
            {
                "key": prefix + "v",
                "version": written.json()["version"],
                "expires_at": written.json()["expires_at"],
                "value_b64": base64.b64encode(b"\x00\xffbinary").decode(),
            }
        ],
        "next": None,
    }
    bare = (await client.get("/v1/kv", params={"prefix": prefix})).json()["items"][0]
    assert "value_b64" not in bare and bare["expires_at"] == written.json()["expires_at"]


async def test_dead_keys_are_never_listed_and_a_page_reads_at_most_limit_rows_per_shard(
    client: httpx.AsyncClient, settings: Settings, prefix: str
) -> None:
    live = [f"{prefix}live-{index:02}" for index in range(3)]
    await put_all(client, live)
    deleted = [f"{prefix}dead-{index:02}" for index in range(4)]
    await put_all(client, deleted)
    for key in deleted:
        assert (await client.delete(url(key))).status_code == 204
    # Dead rows the sweeper cannot reach (no sweep slot), before the live ones in byte order
    # ("dead-", "gone-" < "live-"), on both shards: tombstones and rows expired long ago.
    for shard in settings.shards:
        dead = [(f"{prefix}gone-{shard.name}-{index:02}", b"x", ttl, 1, None) for index, ttl in enumerate([-1, 1] * 20)]
        await rawdb.insert_rows("sqlite", shard.primary, dead)
    listed = await client.get("/v1/kv", params={"prefix": prefix})
    assert [item["key"] for item in listed.json()["items"]] == live
    # With limit 4 the first pages meet only dead rows: empty, yet they go on (the scan moved on).
    first = (await client.get("/v1/kv", params={"prefix": prefix, "limit": "4"})).json()
    assert first["items"] == [] and first["next"] is not None
    keys, pages = await walk(client, prefix=prefix, limit="4")
    assert keys == live
    assert pages >= 80 // (4 * 2)  # at most 4 rows per shard per page, two shards


async def test_a_page_with_values_stops_at_the_byte_budget(client: httpx.AsyncClient, prefix: str) -> None:
    big = b"x" * 65536  # the test server's max_value_bytes
    count = VALUE_BUDGET_BYTES // len(big) + 4
    for index in range(count):
        assert (await client.put(url(f"{prefix}{index:03}"), content=big)).status_code == 201
    page = (await client.get("/v1/kv", params={"prefix": prefix, "values": "true", "limit": "1000"})).json()
    assert len(page["items"]) == VALUE_BUDGET_BYTES // len(big) and page["next"] is not None
    assert all(base64.b64decode(item["value_b64"]) == big for item in page["items"])
    keys, _ = await walk(client, prefix=prefix, values="true", limit="1000")
    assert keys == [f"{prefix}{index:03}" for index in range(count)]


async def test_a_hash_tagged_prefix_lists_its_keys(client: httpx.AsyncClient) -> None:
    tag = "{" + uuid.uuid4().hex[:8] + "}"
    keys = [f"{tag}/msg/{index:04}" for index in range(12)]
    await put_all(client, keys)
    newest_first, _ = await walk(client, prefix=tag + "/msg/", reverse="true", limit="5")
    assert newest_first == keys[::-1]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "limit must be an integer from 1 to 1000"),
        ({"limit": "1001"}, "limit must be an integer from 1 to 1000"),
        ({"limit": "ten"}, "limit must be an integer from 1 to 1000"),
        ({"reverse": "yes"}, "reverse must be 'true' or 'false'"),
        ({"values": "1"}, "values must be 'true' or 'false'"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor is not one this server issued"),
        ({"cursor": "!!"}, "cursor is not one this server issued"),
        ({"prefix": "p\x00"}, "prefix must be at most 255 characters without NUL"),
        ({"prefix": "p" * 256}, "prefix must be at most 255 characters without NUL"),
        ({"start_after": ""}, "key is empty"),
        ({"consistency": "maybe"}, "consistency must be 'strong' or 'eventual'"),
        ({"after": "???"}, "read-after token is not one kvstore issued"),
        ({"sort": "asc"}, "unknown query parameter 'sort'"),
    ],
)
async def test_bad_parameters_are_refused_with_a_reason(
    client: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await client.get("/v1/kv", params=params)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"], response.json()


async def test_a_cursor_replaces_the_listing_parameters(client: httpx.AsyncClient, prefix: str) -> None:
    await put_all(client, [prefix + "1", prefix + "2"])
    cursor = (await client.get("/v1/kv", params={"prefix": prefix, "limit": "1"})).json()["next"]
    mixed = await client.get("/v1/kv", params={"cursor": cursor, "prefix": "other"})
    assert mixed.status_code == 400 and "drop 'prefix'" in mixed.json()["detail"]
    rest = (await client.get("/v1/kv", params={"cursor": cursor})).json()
    assert [item["key"] for item in rest["items"]] == [prefix + "2"]


async def test_listing_needs_no_trailing_slash_and_says_so_for_an_empty_key(client: httpx.AsyncClient) -> None:
    empty = await client.get("/v1/kv/")
    assert empty.status_code == 400 and "GET /v1/kv?prefix=" in empty.json()["detail"]
    assert (await client.put("/v1/kv", content=b"x")).status_code == 405
