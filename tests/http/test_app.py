"""The app's own routes and request bookkeeping (kvstore/http/app.py, middleware.py), in process."""

import uuid

import httpx
import pytest


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


@pytest.mark.parametrize(
    "sent", ["abc123", "550e8400-e29b-41d4-a716-446655440000", "my-req-123", "trace_id:7.b-9", "x" * 128]
)
@pytest.mark.parametrize("path", ["/healthz", "/v1/kv/some-key"])
async def test_requests_carry_the_clients_request_id(client: httpx.AsyncClient, sent: str, path: str) -> None:
    assert (await client.get(path, headers={"X-Request-ID": sent})).headers["x-request-id"] == sent


@pytest.mark.parametrize("sent", ["", "x" * 129, "has space", "semi;colon", 'quote"', "ünï"])
async def test_an_odd_request_id_is_replaced_by_a_generated_one(client: httpx.AsyncClient, sent: str) -> None:
    generated = (await client.get("/healthz", headers={"X-Request-ID": sent.encode()})).headers["x-request-id"]
    assert generated != sent and len(generated) == 32
