"""Peers on this machine, started by the harness on free loopback ports in temp dirs.

* etcd (Debian ``etcd-server``), a single member, driven through its HTTP/JSON gateway
  (``/v3/kv/range``, ``/v3/kv/put``; base64 keys and values). etcd syncs its WAL to disk before it
  acknowledges a write: compare it with kvstore on durable shards.
* Redis (``redis-server``, no persistence: ``save ""``, ``appendonly no``) with its own
  ``redis-benchmark`` GET/SET: the in-memory bound, not a like-for-like peer.

Never the standard ports (2379, 6379): ``free_port()`` binds port 0. Processes are stopped by PID.
"""

import base64
import csv
import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.measurement import Measurement
from benchmarks.wrk import pinning
from kvstore.cluster.ports import free_port

_START_TIMEOUT_S = 20.0
_ETCD_TXN_OPS = 128  # etcd's default --max-txn-ops
_ETCD_QUOTA_BYTES = 8 * 1024**3

PEER_BINARIES = {"etcd": "etcd-server", "redis-server": "redis-server", "redis-benchmark": "redis-tools"}
"""Each binary the peers need, with the Debian package that has it."""


def missing_binaries() -> list[str]:
    return [f"{binary} (Debian: {package})" for binary, package in PEER_BINARIES.items() if not shutil.which(binary)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {_START_TIMEOUT_S:g} s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def etcd() -> Iterator[str]:
    """A one-member etcd on free ports; yields its client URL."""
    with tempfile.TemporaryDirectory(prefix="kvbench-etcd-") as directory:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        log = Path(directory) / "etcd.log"
        command = [
            "etcd",
            "--name=bench",
            f"--data-dir={directory}/data",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=bench=http://127.0.0.1:{peer}",
            f"--quota-backend-bytes={_ETCD_QUOTA_BYTES}",
            "--logger=zap",
            "--log-level=error",
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_until(lambda: _answers(url + "/health"), process, log, "etcd")
            yield url
        finally:
            _stop(process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def etcd_preload(url: str, keys: Sequence[str], value: bytes) -> None:
    """PUT every key, ``_ETCD_TXN_OPS`` per transaction (one fsync each)."""
    encoded = b64(value)
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(keys), _ETCD_TXN_OPS):
            puts = [
                {"request_put": {"key": b64(key.encode()), "value": encoded}}
                for key in keys[start : start + _ETCD_TXN_OPS]
            ]
            client.post("/v3/kv/txn", json={"success": puts}).raise_for_status()


@contextmanager
def redis() -> Iterator[int]:
    """A redis-server without persistence on a free port; yields the port."""
    with tempfile.TemporaryDirectory(prefix="kvbench-redis-") as directory:
        port = free_port()
        log = Path(directory) / "redis.log"
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(log)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log.touch()
        try:
            _wait_until(lambda: _redis_answers(port), process, log, "redis-server")
            yield port
        finally:
            _stop(process)


def _redis_answers(port: int) -> bool:
    result = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False)
    return result.stdout.strip() == "PONG"


def redis_benchmark(port: int, connections: int, requests: int, keys: int, value_size: int) -> list[Measurement]:
    """``redis-benchmark -t set,get`` (SET first, so GETs find values), one CSV row per test."""
    command = [*pinning(), "redis-benchmark", "-p", str(port), "-c", str(connections), "-n", str(requests)]
    command += ["-r", str(keys), "-d", str(value_size), "-t", "set,get", "--csv"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    measurements = []
    for row in csv.DictReader(io.StringIO(completed.stdout)):
        rps = float(row["rps"])
        measurements.append(
            Measurement(
                target="redis",
                workload=f"{row['test'].lower()} uniform {value_size}B c{connections}",
                connections=connections,
                requests=requests,
                duration_s=requests / rps,
                errors=0,
                p50_ms=float(row["p50_latency_ms"]),
                p99_ms=float(row["p99_latency_ms"]),
                tool="redis-benchmark",
            )
        )
    return measurements
