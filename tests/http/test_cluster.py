"""The console's data endpoints (kvstore/http/cluster.py over kvstore/status.py), in process:
``GET /v1/status`` and ``GET /v1/locate/{key}``."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from kvstore.config import Settings
from tests.support.asgi import serving, sqlite_settings


@pytest.fixture(scope="module")
def quiet_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """No sweeper, so that the dead rows stay where the test put them."""
    directory: Path = tmp_path_factory.mktemp("status")
    return sqlite_settings(directory, sweeper={"enabled": False})


@pytest.fixture(scope="module")
async def quiet(quiet_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(quiet_settings) as client:
        yield client


async def test_status_reports_shards_ring_rows_and_dead_rows(
    quiet: httpx.AsyncClient, quiet_settings: Settings
) -> None:
    ring = quiet_settings.ring()
    keys = [f"status-{index}" for index in range(40)]
    for key in keys[:30]:
        assert (await quiet.put(f"/v1/kv/{key}", content=b"v")).status_code == 201
    for key in keys[30:]:
        assert (await quiet.put(f"/v1/kv/{key}?ttl=0.001", content=b"v")).status_code == 201
    await asyncio.sleep(0.05)  # the ten keys with a ttl are dead now; no sweeper reclaims them

    response = await quiet.get("/v1/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert status["ok"] is True
    assert status["ring"] == {"epoch": 0, "phase": "stable", "vnodes_per_weight": 256}
    assert status["migration"] is None
    assert [shard["name"] for shard in status["shards"]] == ["s0", "s1"]
    assert sum(shard["share"] for shard in status["shards"]) == pytest.approx(1.0)
    for shard in status["shards"]:
        owned = [key for key in keys if ring.owner(key) == shard["name"]]
        dead = [key for key in keys[30:] if ring.owner(key) == shard["name"]]
        assert shard["primary"] == {"reachable": True, "error": None} and shard["replicas"] == []
        assert shard["backend"] == "sqlite" and shard["weight"] == 1
        rows = shard["rows"]
        assert (rows["total"], rows["dead"], rows["live"], rows["with_expiry"]) == (
            len(owned),
            len(dead),
            len(owned) - len(dead),
            len(dead),
        )
        assert set(rows["methods"].values()) == {"exact"}
        assert abs(shard["counted_at"] - status["at"]) < 5000


async def test_status_carries_the_servers_request_counts_and_latency(quiet: httpx.AsyncClient) -> None:
    before = (await quiet.get("/v1/status")).json()
    for _ in range(3):
        assert (await quiet.get("/v1/kv/status-counted-but-missing")).status_code == 404
    after = (await quiet.get("/v1/status")).json()
    assert after["at"] >= before["at"]
    get_before = before["requests"].get("get", {"by_status": {}, "latency": {"count": 0}})
    get_after = after["requests"]["get"]
    assert get_after["by_status"]["404"] - get_before["by_status"].get("404", 0) == 3
    latency = get_after["latency"]
    assert latency["count"] - get_before["latency"]["count"] == 3 and latency["sum"] > 0
    bounds = [bound for bound, _ in latency["buckets"]]
    assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1]), "cumulative buckets, +Inf last as null"
    assert latency["buckets"][-1][1] == latency["count"]
    assert after["requests"]["v1/status"]["by_status"]["200"] >= 1, "the status endpoint counts itself"


async def test_status_refuses_query_parameters(quiet: httpx.AsyncClient) -> None:
    response = await quiet.get("/v1/status?shard=s0")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "shard" in response.json()["detail"]


async def test_the_sweepers_counters_appear_per_shard(client: httpx.AsyncClient) -> None:
    """The session app runs an eager sweeper on both shards."""
    for _ in range(100):
        sweepers = (await client.get("/v1/status")).json()["sweepers"]
        # Metrics are the process's: other apps this test process built may add their shards.
        if {"s0", "s1"} <= set(sweepers) and all(sweepers[name].get("cycles", 0) > 0 for name in ("s0", "s1")):
            break
        await asyncio.sleep(0.05)
    assert {"s0", "s1"} <= set(sweepers)
    for entry in (sweepers["s0"], sweepers["s1"]):
        assert entry["cycles"] > 0 and entry["deleted_rows"] >= 0 and 0 <= entry["stale_ratio"] <= 1


@pytest.mark.parametrize(
    "key", ["plain", "with/slash", "spaced key", "new\nline", "ünïcödé", "<img src=x onerror=alert(1)>"]
)
async def test_locate_names_the_shard_the_ring_gives(
    quiet: httpx.AsyncClient, quiet_settings: Settings, key: str
) -> None:
    response = await quiet.get("/v1/locate/" + quote(key, safe=""))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "key": key,
        "shard": quiet_settings.ring().owner(key),
        "fallback": None,
        "ring": {"epoch": 0, "phase": "stable"},
    }


@pytest.mark.parametrize("path", ["/v1/locate/%FF", "/v1/locate/" + "k" * 256, "/v1/locate/a%00b", "/v1/locate/k?x=1"])
async def test_locate_refuses_what_a_key_route_refuses(quiet: httpx.AsyncClient, path: str) -> None:
    response = await quiet.get(path)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_locate_without_a_key_says_so(quiet: httpx.AsyncClient) -> None:
    response = await quiet.get("/v1/locate/")
    assert response.status_code == 400 and response.json()["detail"].startswith("key is empty"), "as /v1/kv/ answers"


async def test_row_counts_are_reused_for_a_while_not_recounted_per_poll(quiet: httpx.AsyncClient) -> None:
    """A count scans the table (all of it on SQLite) on the connection reads use: a polling console
    must not cost one per poll."""
    first = {shard["name"]: shard for shard in (await quiet.get("/v1/status")).json()["shards"]}
    for index in range(10):
        assert (await quiet.put(f"/v1/kv/recount-{index}", content=b"v")).status_code == 201
    again = {shard["name"]: shard for shard in (await quiet.get("/v1/status")).json()["shards"]}
    for name, shard in again.items():
        assert shard["counted_at"] == first[name]["counted_at"] and shard["rows"] == first[name]["rows"]
