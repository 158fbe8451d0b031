"""A stateful hypothesis test: random PUT/GET/DELETE/PATCH, incr, listing, batch and txn sequences
against a dict model.

Runs in process (the app on an event loop of its own, so that hypothesis's synchronous rules can drive
it) on the shards of every engine, with the sweeper working underneath.
Every response is checked against what the model says it must be: status, value, ETag, expiry and
version order. The keys of one run share a hash tag, so that transactions may name any of them.
"""

import base64
import re
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
COUNTERS = st.sampled_from([b"0", b"41", b"-7", b"x", b"007"])  # values a PUT may leave for incr to meet
INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")
OPS = st.lists(
    st.one_of(
        st.builds(lambda key: {"op": "get", "key": key}, KEYS),
        st.builds(
            lambda key, value: {"op": "put", "key": key, "value_b64": value},
            KEYS,
            VALUES.map(lambda v: base64.b64encode(v).decode()),
        ),
        st.builds(lambda key: {"op": "delete", "key": key}, KEYS),
        st.builds(lambda key, by: {"op": "incr", "key": key, "by": by}, KEYS, st.integers(-5, 5)),
    ),
    min_size=1,
    max_size=6,
)


@dataclass
class Entry:
    value: bytes
    version: int
    expires: bool


class KeyValueModel(RuleBasedStateMachine):
    client: httpx.Client

    def __init__(self) -> None:
        super().__init__()
        self.prefix = "{" + uuid.uuid4().hex[:12] + "}"
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

    @rule(key=KEYS, value=COUNTERS)
    def put_counter(self, key: str, value: bytes) -> None:
        self.put(key, value, None)

    @rule(key=KEYS, by=st.integers(-(2**40), 2**40))
    def incr(self, key: str, by: int) -> None:
        response = self.client.patch(self.url(key, f"?incr={by}"))
        entry = self.model.get(key)
        if entry is not None and not INTEGER.fullmatch(entry.value):
            assert response.status_code == 409, response.text
            return
        assert response.status_code == 200, response.text
        total = by + (int(entry.value) if entry is not None else 0)
        assert response.json()["value"] == total
        self.record(key, response, str(total).encode())
        assert self.model[key].expires == (entry is not None and entry.expires)

    @rule(limit=st.integers(1, 4), reverse=st.booleans(), values=st.booleans())
    def list_keys(self, limit: int, reverse: bool, values: bool) -> None:
        listed: list[dict[str, object]] = []
        params = {
            "prefix": self.prefix + "/",
            "limit": str(limit),
            "reverse": str(reverse).lower(),
            "values": str(values).lower(),
        }
        while True:
            response = self.client.get("/v1/kv", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= limit
            listed += page["items"]
            if page["next"] is None:
                break
            params = {"cursor": page["next"], "limit": str(limit), "values": str(values).lower()}
        keys = sorted(self.model, key=lambda key: f"{self.prefix}/{key}".encode(), reverse=reverse)
        assert [item["key"] for item in listed] == [f"{self.prefix}/{key}" for key in keys]
        for item, key in zip(listed, keys, strict=True):
            assert item["version"] == self.model[key].version
            assert (item["expires_at"] is not None) == self.model[key].expires
            if values:
                assert base64.b64decode(str(item["value_b64"])) == self.model[key].value

    def expected(self, model: dict[str, Entry], op: dict[str, object]) -> int:
        """The status the op must get against ``model``; ``model`` is updated as the op leaves it
        (versions are filled in from the answer by ``settle``)."""
        key = str(op["key"])
        entry = model.get(key)
        if op["op"] == "get":
            return 200 if entry else 404
        if op["op"] == "delete":
            model.pop(key, None)
            return 204 if entry else 404
        if op["op"] == "put":
            model[key] = Entry(base64.b64decode(str(op["value_b64"])), -1, False)
            return 200 if entry else 201
        if entry is not None and not INTEGER.fullmatch(entry.value):
            return 409
        total = int(op["by"]) + (int(entry.value) if entry else 0)  # type: ignore[call-overload]
        model[key] = Entry(str(total).encode(), -1, entry.expires if entry else False)
        return 200

    def settle(self, op: dict[str, object], result: dict[str, object], before: Entry | None) -> None:
        """Check one answered op against the model and move the model on by it."""
        key = str(op["key"])
        if op["op"] == "get" and before is not None:
            assert base64.b64decode(str(result["value_b64"])) == before.value and result["version"] == before.version
        if result["status"] in (200, 201) and op["op"] != "get":
            version = int(result["version"])  # type: ignore[call-overload]
            if before is not None:
                assert version > before.version
                self.stale_versions[key] = before.version
            if op["op"] == "incr":
                assert result["value"] == int(op["by"]) + (int(before.value) if before else 0)  # type: ignore[call-overload]
                assert (result["expires_at"] is not None) == (before is not None and before.expires)
            value = base64.b64decode(str(op["value_b64"])) if op["op"] == "put" else str(result["value"]).encode()
            self.model[key] = Entry(value, version, result["expires_at"] is not None)
        elif op["op"] == "delete" and before is not None:
            self.stale_versions[key] = self.model.pop(key).version

    @rule(ops=OPS)
    def batch(self, ops: list[dict[str, object]]) -> None:
        ops = [op | {"key": f"{self.prefix}/{op['key']}"} for op in ops]
        response = self.client.post("/v1/batch", json={"ops": ops})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        for op, result in zip(ops, results, strict=True):
            key = str(op["key"]).removeprefix(self.prefix + "/")
            local = {key: self.model[key]} if key in self.model else {}
            assert result["status"] == self.expected(local, op | {"key": key}), (op, result)
            self.settle(op | {"key": key}, result, self.model.get(key))

    @rule(key=KEYS, test=st.sampled_from(["current", "stale", "absent", "exists"]), success=OPS, failure=OPS)
    def txn(self, key: str, test: str, success: list[dict[str, object]], failure: list[dict[str, object]]) -> None:
        entry = self.model.get(key)
        full = f"{self.prefix}/{key}"
        if test == "current":
            compare, holds = {"key": full, "version": entry.version if entry else 1}, entry is not None
        elif test == "stale":
            compare, holds = {"key": full, "version": self.stale_versions.get(key, 1)}, False
        else:
            compare, holds = {"key": full, test: True}, (entry is not None) == (test == "exists")
        branch = success if holds else failure
        scratch = dict(self.model)
        statuses = [self.expected(scratch, op) for op in branch]
        document = {
            "compare": [compare],
            "success": [op | {"key": f"{self.prefix}/{op['key']}"} for op in success],
            "failure": [op | {"key": f"{self.prefix}/{op['key']}"} for op in failure],
        }
        response = self.client.post("/v1/txn", json=document)
        if 409 in statuses:  # a failed op rolls the whole branch back
            assert response.status_code == 409 and response.json()["op"] == statuses.index(409), response.text
            return
        assert response.status_code == 200, response.text
        assert response.json()["succeeded"] is holds
        for op, result, status in zip(branch, response.json()["results"], statuses, strict=True):
            assert result["status"] == status, (op, result)
            self.settle(op, result, self.model.get(str(op["key"])))

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
