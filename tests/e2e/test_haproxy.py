"""deploy/haproxy/haproxy.cfg with a real HAProxy in front of two `kvstore serve` processes: one is
stopped (SIGTERM) under load, and clients see no error beyond the requests in flight on it."""

import asyncio
import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kvstore.cluster.ports import free_port
from tests.conftest import unavailable
from tests.support.server import ServerProcess, write_config

CONFIG = Path(__file__).parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
WORKERS = 8


class Balancer:
    def __init__(self, directory: Path, front_ends: list[ServerProcess]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = directory / "haproxy.sock"
        self.log_path = directory / "haproxy.log"
        self.env = {
            **os.environ,
            "KVSTORE_LB_BIND": f"127.0.0.1:{self.port}",
            "KVSTORE_LB_ADMIN": str(self.admin),
            **{f"KVSTORE_FE{i}": f"127.0.0.1:{fe.port}" for i, fe in enumerate(front_ends, 1)},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Balancer":
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["haproxy", "-db", "-f", str(CONFIG)], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.admin))
            admin.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := admin.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the kvstore backend's servers, by name."""
        rows = csv.DictReader(self.command("show stat").lstrip("# ").splitlines())
        return {row["svname"]: row for row in rows if row["pxname"] == "kvstore" and row["svname"].startswith("fe")}

    def wait_for(self, states: dict[str, str], timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError):
                current = {name: row["status"] for name, row in self.servers().items()}
                if all(current.get(name, "").startswith(state) for name, state in states.items()):
                    return
            assert time.monotonic() < deadline, f"HAProxy never saw {states}:\n{self.log_path.read_text()[-3000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[Balancer, list[ServerProcess]]]:
    if shutil.which("haproxy") is None:
        unavailable("haproxy is not installed (Debian: apt-get install haproxy; make test does it as root)")
    config = write_config(tmp_path / "shards.yaml", "sqlite", [str(tmp_path / "s0.db"), str(tmp_path / "s1.db")])
    front_ends = [ServerProcess(config), ServerProcess(config)]
    balancer = Balancer(tmp_path, front_ends)
    try:
        for front_end in front_ends:
            front_end.start()
        balancer.start().wait_for({"fe1": "UP", "fe2": "UP"})
        yield balancer, front_ends
    finally:
        balancer.stop()
        for front_end in front_ends:
            front_end.stop()


async def test_stopping_a_front_end_under_load_costs_no_client_error(
    balanced: tuple[Balancer, list[ServerProcess]],
) -> None:
    balancer, (stopped, kept) = balanced
    acknowledged: dict[str, bytes] = {}
    errors: list[str] = []
    done = asyncio.Event()

    async def client_loop(worker: int) -> None:
        async with httpx.AsyncClient(base_url=balancer.url, timeout=10) as client:
            sequence = 0
            while not done.is_set():
                key, value = f"w{worker}/{sequence % 20}", uuid.uuid4().bytes
                sequence += 1
                try:
                    written = await client.put(f"/v1/kv/{key}", content=value)
                    if written.status_code in (200, 201):
                        acknowledged[key] = value
                        read = await client.get(f"/v1/kv/{key}")
                        if read.content != value:
                            errors.append(f"GET {key}: {read.status_code} {read.content[:60]!r}")
                    else:
                        errors.append(f"PUT {key}: {written.status_code} {written.text[:100]}")
                except httpx.HTTPError as error:
                    errors.append(f"{key}: {type(error).__name__} {error}")

    async def stop_one() -> int:
        """SIGTERM to fe1 after a second of load; the most requests HAProxy had on it while it stopped."""
        await asyncio.sleep(1.0)
        stopping = asyncio.create_task(asyncio.to_thread(stopped.stop))
        in_flight = 0
        while not stopping.done():
            in_flight = max(in_flight, int((await asyncio.to_thread(balancer.servers))["fe1"]["scur"]))
            await asyncio.sleep(0.01)
        await stopping
        await asyncio.to_thread(balancer.wait_for, {"fe1": "DOWN", "fe2": "UP"})
        await asyncio.sleep(1.0)  # served by fe2 alone
        done.set()
        return in_flight

    *_, in_flight = await asyncio.gather(*(client_loop(worker) for worker in range(WORKERS)), stop_one())
    assert stopped.process is not None and stopped.process.returncode in (0, -signal.SIGTERM), stopped.log()
    assert "Application shutdown complete" in stopped.log()
    assert len(errors) <= in_flight, f"{len(errors)} errors with {in_flight} in flight on fe1: {errors[:5]}"
    assert int(balancer.servers()["fe1"]["stot"]) > 0, "fe1 served part of the load before it stopped"
    assert len(acknowledged) == WORKERS * 20
    async with httpx.AsyncClient(base_url=kept.url) as client:
        for key, value in acknowledged.items():
            assert (await client.get(f"/v1/kv/{key}")).content == value, "an acknowledged write was lost"
    # The drain README describes, on the admin socket the config opens.
    assert balancer.command("set server kvstore/fe2 state drain").strip() == ""
    assert balancer.servers()["fe2"]["status"] == "DRAIN"
