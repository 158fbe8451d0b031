"""The app's own routes and request bookkeeping (kvstore/http/app.py, middleware.py), in process."""

import uuid

import httpx


async def test_health_readiness_metrics_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready == {"status": "ready", "shards": {"s0": "up", "s1": "up"}, "ring": {"epoch": 0, "phase": "stable"}}
    await client.get(f"/v1/kv/{uuid.uuid4().hex}")
    metrics = (await client.get("/metrics")).text
    assert 'kvstore_http_requests_total{op="get",status="404"}' in metrics
    assert "kvstore_http_request_duration_seconds_bucket" in metrics
    assert 'kvstore_shard_query_duration_seconds_count{op="get",shard=' in metrics
    assert "kvstore_pool_connections_in_use" in metrics
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]["/v1/kv/{key}"]) >= {"get", "put", "patch", "delete"}


async def test_requests_carry_a_request_id(client: httpx.AsyncClient) -> None:
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"
    for insane in ("", "x" * 65, "no spaces", "a-b"):
        replaced = await client.get("/healthz", headers={"X-Request-ID": insane})
        assert len(replaced.headers["x-request-id"]) == 32, insane
