"""kvstore.client against real `kvstore serve` processes: every backend, the README's example as
written, concurrent compare-and-set from threads and tasks, and a real 503 + Retry-After."""

import asyncio
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from kvstore.client import AsyncClient, Client, Compare, Get, Incr, Put, RetryPolicy, Unavailable
from tests.support.server import ServerProcess, write_config

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    """The first Python block of README's "Python client" section."""
    section = README.read_text().split("## Python client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README's Python client section has no python block"
    return match.group(1)


def test_the_readme_example_runs_as_written(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    example = readme_example()
    assert 'Client("http://127.0.0.1:8080")' in example
    assert len(example.splitlines()) <= 20
    exec(compile(example.replace("http://127.0.0.1:8080", server.url), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert 29 < float(printed[0]) <= 30 and printed[1] == "gone"


def test_both_clients_on_every_backend(server: ServerProcess) -> None:
    key, blob = f"c/{time.monotonic_ns()}/../odd key?.%", bytes(range(256))
    with Client(server.url) as kv:
        written = kv.put(key, blob, ttl=60)
        assert kv.get(key).value == blob and kv.get(key, strong=True).version == written.version

        def increment_from_a_thread() -> None:
            for _ in range(5):
                kv.update(f"{key}/threads", lambda current: b"%d" % (int(current or 0) + 1))

        threads = [threading.Thread(target=increment_from_a_thread) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert kv.get(f"{key}/threads").value == b"20"

    async def from_tasks() -> bytes:
        async with AsyncClient(server.url) as kv:
            await asyncio.gather(*(kv.update(f"{key}/tasks", lambda c: b"%d" % (int(c or 0) + 1)) for _ in range(16)))
            counted = await asyncio.gather(*(kv.incr(f"{key}/counter", by=3) for _ in range(16)))
            assert max(count.value for count in counted) == 48
            assert await kv.delete(key) and not await kv.delete(key)
            return (await kv.get(f"{key}/tasks")).value

    assert asyncio.run(from_tasks()) == b"16"


def test_a_shed_request_is_retried_after_retry_after(tmp_path: Path) -> None:
    """With one request slot taken by a slow upload, the server sheds the client's read and write
    (503 + Retry-After: 1, nothing applied); the client waits, then both succeed."""
    config = write_config(tmp_path / "shards.yaml", "sqlite", [str(tmp_path / "s0.db")], max_in_flight=1)
    server = ServerProcess(config).start()
    try:
        with Client(server.url) as kv, socket.create_connection(("127.0.0.1", server.port)) as slow:
            kv.put("k", b"before")
            slow.sendall(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
            time.sleep(0.2)  # the upload is in flight
            with Client(server.url, retry=RetryPolicy(attempts=1)) as once, pytest.raises(Unavailable) as shed:
                once.get("k")
            assert (shed.value.status, shed.value.retry_after_s) == (503, 1.0)

            def finish_upload() -> None:
                time.sleep(0.3)
                slow.sendall(b"0\r\n\r\n")

            threading.Thread(target=finish_upload).start()
            started = time.monotonic()
            assert kv.put("k", b"after").version > 0
            assert time.monotonic() - started >= 1.0, "waited for Retry-After"
            assert kv.get("k").value == b"after"
            assert slow.recv(1024).startswith(b"HTTP/1.1 201")
    finally:
        server.stop()


def test_list_batch_and_txn_on_every_backend(server: ServerProcess) -> None:
    prefix = f"list/{time.monotonic_ns()}/"
    keys = [f"{prefix}{index:03d}" for index in range(30)]
    with Client(server.url) as kv:
        for key in keys:
            kv.put(key, key[-3:])
        assert [item.key for item in kv.list(prefix, page_size=7)] == keys
        newest = kv.list(prefix, reverse=True, values=True)
        assert [(item.key, item.value) for item in newest][:2] == [(keys[-1], b"029"), (keys[-2], b"028")]
        kv.delete(keys[0])
        assert next(iter(kv.list(prefix))).key == keys[1]
        fetched = kv.batch([Get(key) for key in keys] + [Put(f"{prefix}new", b"n"), Incr(f"{prefix}n")])
        assert [result.value for result in fetched[:3]] == [None, b"001", b"002"]
        assert [result.status for result in fetched[-2:]] == [201, 200] and fetched[0].status == 404
        tag = "{" + prefix + "}"
        first = kv.txn(compare=[Compare(f"{tag}a", absent=True)], success=[Put(f"{tag}a", b"1"), Incr(f"{tag}n")])
        again = kv.txn(compare=[Compare(f"{tag}a", absent=True)], failure=[Get(f"{tag}a"), Incr(f"{tag}n")])
        assert (first.succeeded, again.succeeded, again.results[0].value, again.results[1].value) == (
            True,
            False,
            b"1",
            2,
        )
