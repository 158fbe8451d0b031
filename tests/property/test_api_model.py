"""A stateful hypothesis test: random PUT/GET/DELETE/PATCH sequences against a dict model.

Runs in process (the app on an event loop of its own, so that hypothesis's synchronous rules can drive
it) on the shards of every engine, with the sweeper working underneath.
Every response is checked against what the model says it must be: status, value, ETag, expiry and
version order.
"""

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from tests.support.asgi import backend_settings, serving_blocking

KEYS = st.sampled_from(["a", "b/c", "ключ", "with space", "%41"])
VALUES = st.binary(max_size=64)
TTLS = st.sampled_from([None, "1000", "30.5"])  # persistent or outliving the test


@dataclass
class Entry:
    value: bytes
    version: int
    expires: bool


class KeyValueModel(RuleBasedStateMachine):
    client: httpx.Client

    def __init__(self) -> None:
        super().__init__()
        self.prefix = uuid.uuid4().hex[:12]
        self.model: dict[str, Entry] = {}
        self.stale_versions: dict[str, int] = {}

    def url(self, key: str, query: str = "") -> str:
        return "/v1/kv/" + quote(f"{self.prefix}/{key}", safe="/") + query

    def record(self, key: str, response: httpx.Response, value: bytes | None = None) -> None:
        body = response.json()
        version = body["version"]
        previous = self.model.get(key)
        if previous is not None:
            assert version > previous.version
            self.stale_versions[key] = previous.version
        assert response.headers["etag"] == f'"{version}"'
        entry_value = value if value is not None else previous.value  # type: ignore[union-attr]
        self.model[key] = Entry(entry_value, version, body["expires_at"] is not None)

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def put(self, key: str, value: bytes, ttl: str | None) -> None:
        response = self.client.put(self.url(key, f"?ttl={ttl}" if ttl else ""), content=value)
        assert response.status_code == (200 if key in self.model else 201), response.text
        self.record(key, response, value)

    @rule(key=KEYS, value=VALUES)
    def create_only(self, key: str, value: bytes) -> None:
        response = self.client.put(self.url(key), content=value, headers={"If-None-Match": "*"})
        if key in self.model:
            assert response.status_code == 412
        else:
            assert response.status_code == 201
            self.record(key, response, value)

    @rule(key=KEYS, value=VALUES, current=st.booleans())
    def replace_if_match(self, key: str, value: bytes, current: bool) -> None:
        entry = self.model.get(key)
        version = entry.version if (entry and current) else self.stale_versions.get(key, 1)
        response = self.client.put(self.url(key), content=value, headers={"If-Match": f'"{version}"'})
        if entry is not None and current:
            assert response.status_code == 200
            self.record(key, response, value)
        else:
            assert response.status_code == 412

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        response = self.client.get(self.url(key))
        entry = self.model.get(key)
        if entry is None:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        assert response.content == entry.value
        assert response.headers["etag"] == f'"{entry.version}"'
        assert ("expires-at" in response.headers) == entry.expires

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        response = self.client.delete(self.url(key))
        assert response.status_code == (204 if key in self.model else 404)
        if key in self.model:
            self.stale_versions[key] = self.model.pop(key).version

    @rule(key=KEYS, persist=st.booleans())
    def patch(self, key: str, persist: bool) -> None:
        response = self.client.patch(self.url(key, "?persist=true" if persist else "?ttl=1000"))
        if key not in self.model:
            assert response.status_code == 404
            return
        assert response.status_code == 200
        assert (response.json()["expires_at"] is None) == persist
        self.record(key, response)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        assert self.client.patch(self.url(key, "?ttl=0.001")).status_code == 200
        time.sleep(0.005)
        self.stale_versions[key] = self.model.pop(key).version
        assert self.client.get(self.url(key)).status_code == 404


def test_api_behaves_like_a_dict(backend: str, shard_locations: list[str], tmp_path: Path) -> None:
    """On every engine, with natural batching on (the default) and the sweeper underneath."""
    with serving_blocking(backend_settings(backend, shard_locations, tmp_path)) as client:
        KeyValueModel.client = client
        run_state_machine_as_test(
            KeyValueModel,
            settings=settings(
                max_examples=30,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
