"""A front end frozen (SIGSTOP) with a write in its socket across a whole reshard routes that write
by the ring it knew when it wakes: the old owner refuses it (fenced statement), and the front end
routes it again by the current ring. Without the fence the write would land on the old owner,
shadowed by the moved row: acknowledged and lost.
"""

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import rawdb
from tests.support.fleet import kvstore, new_shards, ring, write_config
from tests.support.server import ServerProcess


@pytest.fixture
def frozen_front_end() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        if process.process is not None:
            os.kill(process.process.pid, signal.SIGCONT)
        process.stop()


async def test_a_write_held_by_a_frozen_front_end_is_refused_by_the_old_owner_and_routed_again(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, frozen_front_end: list[ServerProcess]
) -> None:
    old = new_shards("s", backend, 2, tmp_path, request)
    new = [*old, *new_shards("s", backend, 1, tmp_path, request, start=2)]
    config, target = write_config(tmp_path / "old.yaml", old), write_config(tmp_path / "new.yaml", new)
    # The frozen front end must not re-read the ring record on waking before it serves the write.
    document = yaml.safe_load(config.read_text())
    document["server"]["ring_poll_interval_s"] = 600
    slow_poll = tmp_path / "slow-poll.yaml"
    slow_poll.write_text(yaml.safe_dump(document))
    key = next(f"k{index}" for index in range(1000) if ring(old).owner(f"k{index}") != ring(new).owner(f"k{index}"))
    old_owner, new_owner = (next(s for s in shards if s.name == ring(shards).owner(key)) for shards in (old, new))

    front_end = ServerProcess(slow_poll).start()
    frozen_front_end.append(front_end)
    assert front_end.process is not None
    async with httpx.AsyncClient(base_url=front_end.url, timeout=60) as client:
        assert (await client.put(f"/v1/kv/{key}", content=b"before")).status_code == 201
        os.kill(front_end.process.pid, signal.SIGSTOP)
        write = asyncio.create_task(client.put(f"/v1/kv/{key}", content=b"written while frozen"))
        await asyncio.sleep(0.5)  # the request waits in the frozen process's socket
        for step in (("start", "--to", str(target)), ("copy",), ("cutover",)):
            result = await asyncio.to_thread(kvstore, "reshard", *step, "--config", str(config))
            assert result.returncode == 0, result.stdout + result.stderr
        assert not write.done()
        os.kill(front_end.process.pid, signal.SIGCONT)
        response = await write
        assert response.status_code == 200, response.text
        metrics = (await client.get("/metrics")).text

    refusals = re.search(rf'kvstore_ring_refusals_total{{shard="{old_owner.name}"}} (\S+)', metrics)
    assert refusals is not None and float(refusals.group(1)) >= 1, "the old owner did not refuse the stale write"
    select = "SELECT value FROM store WHERE key = ?"
    assert await rawdb.execute(backend, new_owner.location, select, key) == [(b"written while frozen",)]
    assert await rawdb.execute(backend, old_owner.location, select, key) == [(b"before",)], "applied on the old owner"
