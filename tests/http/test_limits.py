"""Load shedding (kvstore/http/limits.py), in process; the body and header limits that need a real
HTTP parser are tested on a real process (tests/e2e/test_security.py, tests/property/test_raw_requests.py)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.asgi import serving, sqlite_settings


async def test_beyond_max_in_flight_requests_are_shed_at_once(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x"
        await release.wait()

    settings = sqlite_settings(tmp_path, shards=1, max_in_flight=2, retry_after_s=3)
    async with serving(settings) as client:
        holders = [asyncio.create_task(client.put(f"/v1/kv/slow{i}", content=slow_body())) for i in range(2)]
        await asyncio.sleep(0.1)
        shed = await client.get("/v1/kv/any")
        assert shed.status_code == 503 and shed.headers["retry-after"] == "3"
        assert "overloaded" in shed.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200, "probes are never shed"
        release.set()
        assert [(await holder).status_code for holder in holders] == [201, 201]
        assert (await client.get("/v1/kv/slow0")).status_code == 200
