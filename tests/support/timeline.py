"""A steady write + read load against a front end, every answer kept on a timeline, for failover tests.

Writers PUT fresh keys (value = key) and keep each write's read-after token; readers GET keys
already acknowledged, with that token, so an answer older than the write (a 404) is a violation
whatever node served it. Times are ``time.monotonic()``.
"""

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Answer:
    op: str
    key: str
    status: int
    started: float
    finished: float
    detail: str


@dataclass
class Timeline:
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> its write's read-after token
    fault_at: float = 0.0

    def ok(self, op: str) -> list[Answer]:
        return [answer for answer in self.answers if answer.op == op and 200 <= answer.status < 300]

    def errors(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status >= 500]

    def write_outage(self) -> tuple[float, float]:
        """(start, end) of the longest spell after the fault in which no write was acknowledged."""
        finished = sorted(answer.finished for answer in self.ok("put") if answer.finished >= self.fault_at)
        assert finished, "no write succeeded after the fault"
        moments = [self.fault_at, *finished]
        return max(zip(moments, moments[1:], strict=False), key=lambda spell: spell[1] - spell[0])

    def write_outage_s(self) -> float:
        start, end = self.write_outage()
        return end - start

    def reads_ok_between(self, start: float, end: float) -> int:
        return sum(1 for answer in self.ok("get") if start <= answer.finished <= end)

    def summary(self) -> str:
        details = Counter(f"{answer.op} {answer.status} {answer.detail[:70]}" for answer in self.errors())
        return (
            f"{len(self.answers)} requests, {len(self.errors())} answered 5xx, {len(self.acknowledged)} writes"
            f" acknowledged, longest spell without an acknowledged write {self.write_outage_s():.2f} s;"
            f" errors: {dict(details.most_common(4))}"
        )


async def run_timeline(
    url: str, seconds: float, fault: Callable[[], Awaitable[None]], fault_at_s: float, *, timeout_s: float
) -> Timeline:
    timeline = Timeline()
    prefix = uuid.uuid4().hex[:8]
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def call(op: str, key: str, request: Awaitable[httpx.Response]) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await request
        except httpx.HTTPError as error:
            timeline.answers.append(Answer(op, key, 599, started, time.monotonic(), repr(error)))
            return None
        detail = response.json().get("detail", "") if response.status_code >= 400 else ""
        timeline.answers.append(Answer(op, key, response.status_code, started, time.monotonic(), detail))
        return response

    async def writer(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            key = f"{prefix}-{next(counter)}"
            response = await call("put", key, client.put(f"/v1/kv/{key}", content=key.encode()))
            if response is not None and response.status_code in (200, 201):
                timeline.acknowledged[key] = response.headers["kv-read-after"]

    async def reader(client: httpx.AsyncClient, rng: random.Random) -> None:
        while time.monotonic() < stop_at:
            if not timeline.acknowledged:
                await asyncio.sleep(0.01)
                continue
            key = rng.choice(list(timeline.acknowledged))
            response = await call("get", key, client.get(f"/v1/kv/{key}", params={"after": timeline.acknowledged[key]}))
            if response is not None and response.status_code < 500:
                assert response.status_code == 200 and response.content == key.encode(), (key, response.status_code)
            await asyncio.sleep(0.005)

    async def inject() -> None:
        await asyncio.sleep(fault_at_s)
        timeline.fault_at = time.monotonic()
        await fault()

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s + 10, limits=httpx.Limits(max_connections=32)) as client:
        rng = random.Random(1)
        await asyncio.gather(*(writer(client) for _ in range(4)), *(reader(client, rng) for _ in range(4)), inject())
    return timeline


async def assert_all_acknowledged_readable(url: str, timeline: Timeline) -> None:
    """Every acknowledged write reads back from the (new) primary."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for key in timeline.acknowledged:
            response = await client.get(f"/v1/kv/{key}", params={"consistency": "strong"})
            assert response.status_code == 200 and response.content == key.encode(), key
