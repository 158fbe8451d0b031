"""Online resharding under load: two front ends serve writes, reads, deletes, batches and listings
while `kvstore reshard run` moves the data; afterwards nothing acknowledged is lost or resurrected,
and every listing taken meanwhile showed every preloaded key exactly once, at its version.

No request may fail: writes to moving keys are not paused, and a front end still routing by the
old ring is refused by the shards (fenced statements) and routes again by the new one, unseen.
Every load worker owns its keys, so the last acknowledged operation on a key defines what
every later read must return.
"""

import asyncio
import base64
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kvstore.reshard.plan import sample_diff
from tests.support.fleet import kvstore, new_shards, placement, ring, write_config
from tests.support.server import ServerProcess

PRELOADED = 1000
WORKERS = 8
BATCH_WORKERS = 2
KEYS_PER_WORKER = 40
SHORT_TTL_S = 1

UNKNOWN = object()


@dataclass
class Expected:
    """What a key must read as: absent (value None), or a value with its ETag and expiry."""

    value: bytes | None = None
    etag: str | None = None
    expires_at_ms: int | None = None

    def definitely_gone(self, now_ms: int) -> bool:
        return self.value is None or (self.expires_at_ms is not None and now_ms > self.expires_at_ms + 500)

    def check(self, response: httpx.Response, now_ms: int) -> str | None:
        """Why ``response`` contradicts this state, or None. Expiry has a 500 ms grace either side."""
        gone = self.definitely_gone(now_ms)
        maybe_gone = self.expires_at_ms is not None and now_ms > self.expires_at_ms - 500
        if response.status_code == 404:
            return None if gone or maybe_gone else "acknowledged value lost (404)"
        if response.status_code != 200:
            return f"status {response.status_code}"
        if gone:
            return "deleted or expired key came back"
        if response.content != self.value or response.headers.get("etag") != self.etag:
            return f"stale or foreign value {response.content[:30]!r} etag {response.headers.get('etag')}"
        if self.expires_at_ms is not None and response.headers.get("expires-at") != str(self.expires_at_ms):
            return "expiry changed"
        return None


@dataclass
class Load:
    urls: list[str]
    model: dict[str, Any] = field(default_factory=dict)  # key -> Expected, or UNKNOWN
    acknowledged: int = 0
    refused: Counter[int | str] = field(default_factory=Counter)  # by status, or transport error
    anomalies: list[str] = field(default_factory=list)
    listings: int = 0  # complete listings of the preloaded keys

    async def lister(self, stop: asyncio.Event, client: httpx.AsyncClient, preloaded: dict[str, "Expected"]) -> None:
        """Walks the listing of the preloaded keys (never written by the load) page by page, again and
        again: each walk must show every one of them once, in byte order, at its version."""
        rng = random.Random(-1)
        wanted = [(key, preloaded[key].etag) for key in sorted(preloaded, key=str.encode)]
        while not stop.is_set():
            seen: list[tuple[str, str | None]] = []
            params = {"prefix": "pre-", "limit": "150"}
            while True:
                response = await client.get(f"{rng.choice(self.urls)}/v1/kv", params=params)
                if response.status_code >= 500:
                    self.refused[response.status_code] += 1
                    break
                page = response.json()
                seen += [(item["key"], f'"{item["version"]}"') for item in page["items"]]
                if page["next"] is None:
                    if seen != wanted:
                        missing, extra = set(wanted) - set(seen), set(seen) - set(wanted)
                        self.anomalies.append(
                            f"listing: {len(seen)} items, missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}"
                        )
                    self.listings += 1
                    break
                params = {"cursor": page["next"], "limit": "150"}

    async def batcher(self, worker: int, stop: asyncio.Event, client: httpx.AsyncClient) -> None:
        """Batches of PUTs of its own keys, then a batch of GETs that must read what was acknowledged."""
        rng = random.Random(1000 + worker)
        keys = [f"b{worker}-{index}" for index in range(10)]
        for key in keys:
            self.model[key] = Expected()
        while not stop.is_set():
            values = {key: rng.randbytes(rng.randint(1, 32)) for key in rng.sample(keys, 5)}
            ops = [
                {"op": "put", "key": key, "value_b64": base64.b64encode(value).decode()}
                for key, value in values.items()
            ]
            try:
                response = await client.post(f"{rng.choice(self.urls)}/v1/batch", json={"ops": ops})
            except httpx.TransportError as error:
                self.refused[type(error).__name__] += 1
                for key in values:
                    self.model[key] = UNKNOWN
                continue
            if response.status_code >= 500:
                self.refused[response.status_code] += 1
                for key in values:
                    self.model[key] = UNKNOWN
                continue
            for (key, value), result in zip(values.items(), response.json()["results"], strict=True):
                if result["status"] in (200, 201):
                    self.model[key] = Expected(value, f'"{result["version"]}"')
                    self.acknowledged += 1
                else:
                    self.refused[result["status"]] += 1
                    self.model[key] = UNKNOWN
            reads = await client.post(
                f"{rng.choice(self.urls)}/v1/batch", json={"ops": [{"op": "get", "key": key} for key in keys]}
            )
            if reads.status_code >= 500:
                self.refused[reads.status_code] += 1
                continue
            for key, result in zip(keys, reads.json()["results"], strict=True):
                expected = self.model[key]
                if expected is UNKNOWN or result["status"] >= 500:
                    continue
                if result["status"] == 404:
                    if expected.value is not None:
                        self.anomalies.append(f"batch GET {key}: acknowledged value lost (404)")
                elif (base64.b64decode(result["value_b64"]), f'"{result["version"]}"') != (
                    expected.value,
                    expected.etag,
                ):
                    self.anomalies.append(f"batch GET {key}: stale or foreign value at version {result['version']}")

    async def worker(self, worker: int, stop: asyncio.Event, client: httpx.AsyncClient) -> None:
        rng = random.Random(worker)
        keys = [f"w{worker}-{index}" for index in range(KEYS_PER_WORKER)]
        for key in keys:
            self.model[key] = Expected()
        while not stop.is_set():
            key = rng.choice(keys)
            url = f"{rng.choice(self.urls)}/v1/kv/{key}"
            roll = rng.random()
            try:
                if roll < 0.25:
                    await self._get(client, key, url)
                elif roll < 0.4:
                    await self._delete(client, key, url)
                elif roll < 0.5:
                    await self._conditional_put(client, key, url, rng)
                else:
                    ttl = rng.choice([None, None, 3600, SHORT_TTL_S])
                    await self._put(client, key, url, rng, ttl, {})
            except httpx.TransportError as error:
                self.refused[type(error).__name__] += 1
                self.model[key] = UNKNOWN

    async def _get(self, client: httpx.AsyncClient, key: str, url: str) -> None:
        response = await client.get(url)
        expected = self.model[key]
        if response.status_code >= 500:
            self.refused[response.status_code] += 1
        elif expected is not UNKNOWN and (problem := expected.check(response, int(time.time() * 1000))):
            self.anomalies.append(f"GET {key}: {problem}")

    async def _put(
        self,
        client: httpx.AsyncClient,
        key: str,
        url: str,
        rng: random.Random,
        ttl: int | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        value = rng.randbytes(rng.randint(1, 64))
        response = await client.put(url, content=value, params={} if ttl is None else {"ttl": ttl}, headers=headers)
        if response.status_code in (200, 201):
            expires = response.headers.get("expires-at")
            self.model[key] = Expected(value, response.headers["etag"], None if expires is None else int(expires))
            self.acknowledged += 1
        elif response.status_code >= 500:
            self.refused[response.status_code] += 1
            self.model[key] = UNKNOWN
        return response

    async def _conditional_put(self, client: httpx.AsyncClient, key: str, url: str, rng: random.Random) -> None:
        """If-Match with the ETag of the key's last acknowledged write: it must match (the
        version lineage survives the move), unless the key has expired since."""
        expected = self.model[key]
        if expected is UNKNOWN or expected.value is None or expected.expires_at_ms is not None:
            return
        response = await self._put(client, key, url, rng, None, {"If-Match": expected.etag})
        if response.status_code == 412:
            self.anomalies.append(f"PUT If-Match {key}: 412, the acknowledged version was lost")

    async def _delete(self, client: httpx.AsyncClient, key: str, url: str) -> None:
        response = await client.delete(url)
        expected, now_ms = self.model[key], int(time.time() * 1000)
        if response.status_code in (204, 404):
            if expected is not UNKNOWN:
                if response.status_code == 404 and (problem := expected.check(response, now_ms)):
                    self.anomalies.append(f"DELETE {key}: {problem}")
                if response.status_code == 204 and expected.definitely_gone(now_ms):
                    self.anomalies.append(f"DELETE {key}: 204, a deleted or expired key came back")
            self.model[key] = Expected()
            self.acknowledged += 1
        elif response.status_code >= 500:
            self.refused[response.status_code] += 1
            self.model[key] = UNKNOWN


@pytest.fixture
def front_ends() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


SCENARIOS = {
    "sqlite-2-to-3": ("sqlite", "sqlite"),
    "postgres-2-to-3": ("postgres", "postgres"),
    "mariadb-2-to-3": ("mysql", "mysql"),
    "mariadb-to-postgres": ("mysql", "postgres"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_reshard_under_load_loses_nothing(
    scenario: str, tmp_path: Path, request: pytest.FixtureRequest, front_ends: list[ServerProcess]
) -> None:
    source_backend, target_backend = SCENARIOS[scenario]
    old = new_shards("s", source_backend, 2, tmp_path, request)
    if source_backend == target_backend:  # add a third shard
        new = [*old, *new_shards("s", target_backend, 1, tmp_path, request, start=2)]
    else:  # move every key to other shards on another engine
        new = new_shards("p", target_backend, 2, tmp_path, request)
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    front_ends += [ServerProcess(config).start(), ServerProcess(config).start()]
    urls = [process.url for process in front_ends]

    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout could close one under a request.
    limits = httpx.Limits(max_connections=64, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        preloaded = await preload(client, urls[0])
        before = await placement(old)
        load = Load(urls)
        stop = asyncio.Event()
        workers = [asyncio.create_task(load.worker(w, stop, client)) for w in range(WORKERS)]
        workers += [asyncio.create_task(load.batcher(w, stop, client)) for w in range(BATCH_WORKERS)]
        workers.append(asyncio.create_task(load.lister(stop, client, preloaded)))
        await asyncio.sleep(1)
        acknowledged_before, listings_before = load.acknowledged, load.listings
        migration = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kvstore", "reshard", "run", "--config", str(config), "--to", str(target),
            "--batch-size", "50", "--rows-per-second", "600",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(migration.communicate(), 180)
        acknowledged_during = load.acknowledged - acknowledged_before
        listings_during = load.listings - listings_before
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*workers)
        assert migration.returncode == 0, err.decode()[-3000:]

        rerouted = sum([await refusals(client, url) for url in urls])
        # A front end started now with the old shards.yaml learns the new ring from the shards.
        front_ends.append(ServerProcess(config).start())
        final = await final_reads(client, [process.url for process in front_ends], preloaded, load)
        epochs = {(await client.get(f"{process.url}/readyz")).json()["ring"]["epoch"] for process in front_ends}

    summary = f"{load.acknowledged} writes acknowledged ({acknowledged_during} during the migration)"
    summary += f", {load.listings} complete listings ({listings_during} during it)"
    summary += f", {rerouted:.0f} statements refused by a shard's newer ring and routed again"
    print(f"{scenario}: {summary}, refused {dict(load.refused)}")
    assert load.anomalies == [], load.anomalies[:10]
    # Fenced statements: a front end behind the ring is refused by the shard and routes again, unseen.
    assert not load.refused, f"clients saw errors during the migration: {dict(load.refused)}"
    assert final == [], final[:10]
    assert acknowledged_during >= 100, f"only {acknowledged_during} writes were acknowledged during the migration"
    assert listings_during >= 3, f"only {listings_during} listings completed during the migration"
    assert "describes a ring the shards no longer use" in front_ends[2].log(), "the late front end did not say so"
    assert epochs == {3}, "every front end follows the final record: copying, switched, stable"

    verified = kvstore("verify", "--config", str(config), "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["clean"], verified.stdout + verified.stderr
    assert report["misplaced"] == report["missing"] == report["stale"] == 0

    # Every live key sits on exactly its new owner; preloaded keys moved exactly as the ring diff says.
    after = await placement(new)
    new_ring, old_ring = ring(new), ring(old)
    assert all(shards == [new_ring.owner(key)] for key, shards in after.items()), "a key is misplaced or doubled"
    assert set(preloaded) <= set(after)
    moved = Counter((before[key][0], after[key][0]) for key in preloaded if before[key] != after[key])
    assert dict(moved) == dict(sample_diff(old_ring, new_ring, preloaded).moves)
    # `kvstore ring diff` computes each (from, to) share of the key space; the keys really moved so.
    diff = json.loads(kvstore("ring", "diff", str(config), str(target), "--json").stdout)
    for move in diff["moves"]:
        measured = moved[move["from"], move["to"]] / len(preloaded)
        assert measured == pytest.approx(move["fraction"], abs=0.06), move
    if source_backend != target_backend:
        assert await placement(old) == {}, "cleanup left rows on the old shards"


async def refusals(client: httpx.AsyncClient, url: str) -> float:
    """The front end's ``kvstore_ring_refusals_total``, over its shards."""
    metrics = (await client.get(f"{url}/metrics")).text
    return sum(float(value) for value in re.findall(r"^kvstore_ring_refusals_total\{[^}]*\} (\S+)$", metrics, re.M))


async def preload(client: httpx.AsyncClient, url: str) -> dict[str, Expected]:
    """PRELOADED keys through the API, a third with a one-hour TTL (whose expiry must survive the move)."""
    semaphore = asyncio.Semaphore(16)
    expected: dict[str, Expected] = {}

    async def put(index: int) -> None:
        key, value = f"pre-{index}", f"value-{index}".encode()
        async with semaphore:
            response = await client.put(
                f"{url}/v1/kv/{key}", content=value, params={"ttl": 3600} if index % 3 == 0 else {}
            )
        assert response.status_code == 201, response.text
        expires = response.headers.get("expires-at")
        expected[key] = Expected(value, response.headers["etag"], None if expires is None else int(expires))

    await asyncio.gather(*(put(index) for index in range(PRELOADED)))
    return expected


async def final_reads(
    client: httpx.AsyncClient, urls: list[str], preloaded: dict[str, Expected], load: Load
) -> list[str]:
    """Every key through every front end against its expected state."""
    states = {**preloaded, **{key: state for key, state in load.model.items() if state is not UNKNOWN}}
    problems = []
    semaphore = asyncio.Semaphore(32)

    async def read(url: str, key: str, state: Expected) -> None:
        async with semaphore:
            response = await client.get(f"{url}/v1/kv/{key}")
        if problem := state.check(response, int(time.time() * 1000)):
            problems.append(f"{url} {key}: {problem}")

    await asyncio.gather(*(read(url, key, state) for url in urls for key, state in states.items()))
    return problems
