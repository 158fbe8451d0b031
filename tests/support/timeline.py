"""A steady write + read load against a front end, every answer kept on a timeline, for failover tests.

Writers PUT fresh keys (value = key) and keep each write's read-after token; readers GET keys
already acknowledged, every other read with that token, so such an answer older than the write
(a 404) is a violation whatever node served it; a plain read may be served by a replica that has
not replayed the write yet (404), never a wrong value. Times are ``time.monotonic()``.
"""

import asyncio
import itertools
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
        return max(itertools.pairwise(moments), key=lambda spell: spell[1] - spell[0])

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


def _writes_flowing(timeline: Timeline, since: float, now: float, max_gap_s: float) -> bool:
    """Whether writes were acknowledged all through ``[since, now]``, never ``max_gap_s`` apart."""
    moments = [since, *sorted(a.finished for a in timeline.ok("put") if a.finished >= since), now]
    return all(later - earlier <= max_gap_s for earlier, later in itertools.pairwise(moments))


async def run_timeline(
    url: str,
    fault: Callable[[], Awaitable[None]],
    *,
    fault_at_s: float,
    timeout_s: float,
    settle_s: float = 1.5,
    max_seconds: float = 30.0,
) -> Timeline:
    """Load, inject ``fault`` after ``fault_at_s``, and stop once the fault is over and writes have been
    acknowledged without a break for ``settle_s`` (or after ``max_seconds``)."""
    timeline = Timeline()
    prefix = uuid.uuid4().hex[:8]
    stop_at = time.monotonic() + max_seconds
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
        with_token = False
        while time.monotonic() < stop_at:
            if not timeline.acknowledged:
                await asyncio.sleep(0.01)
                continue
            key = rng.choice(list(timeline.acknowledged))
            with_token = not with_token
            params = {"after": timeline.acknowledged[key]} if with_token else {}
            response = await call("get", key, client.get(f"/v1/kv/{key}", params=params))
            stale_allowed = not with_token and response is not None and response.status_code == 404
            if response is not None and response.status_code < 500 and not stale_allowed:
                assert response.status_code == 200 and response.content == key.encode(), (key, response.status_code)
            await asyncio.sleep(0.005)

    async def inject() -> None:
        nonlocal stop_at
        await asyncio.sleep(fault_at_s)
        timeline.fault_at = time.monotonic()
        await fault()
        while (now := time.monotonic()) < stop_at:
            if now - timeline.fault_at >= settle_s and _writes_flowing(timeline, now - settle_s, now, 0.5):
                stop_at = now
                return
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(
        base_url=url, timeout=timeout_s + 10, limits=httpx.Limits(max_connections=32)
    ) as client:
        rng = random.Random(1)
        await asyncio.gather(*(writer(client) for _ in range(4)), *(reader(client, rng) for _ in range(4)), inject())
    return timeline


async def assert_all_acknowledged_readable(url: str, timeline: Timeline) -> None:
    """Every acknowledged write reads back from the (new) primary."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for key in timeline.acknowledged:
            response = await client.get(f"/v1/kv/{key}", params={"consistency": "strong"})
            assert response.status_code == 200 and response.content == key.encode(), key
