"""A real ``kvstore serve`` process on a free port, for tests that talk HTTP to it."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from kvstore.cluster.ports import free_port


def config_document(
    backend: str, locations: list[str], sweeper: dict[str, Any] | None = None, **server: Any
) -> dict[str, Any]:
    """A shards.yaml document with one shard per location (s0, s1, ...)."""
    shards = [{"name": f"s{i}", "backend": backend, "primary": loc} for i, loc in enumerate(locations)]
    return {"server": server, "sweeper": sweeper or {}, "shards": shards}


def write_config(
    path: Path, backend: str, locations: list[str], sweeper: dict[str, Any] | None = None, **server: Any
) -> Path:
    """That document written to ``path``, for a `kvstore serve` process to read."""
    path.write_text(yaml.safe_dump(config_document(backend, locations, sweeper, **server)))
    return path


class ServerProcess:
    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None, https: bool = False) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = config.with_suffix(f".{self.port}.log")
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> "ServerProcess":
        command = [
            sys.executable,
            "-m",
            "kvstore",
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            environment = None if self.env is None else {**os.environ, **self.env}
            self.process = subprocess.Popen(
                [*command, *self.args], stdout=log, stderr=subprocess.STDOUT, env=environment
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kvstore serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1, verify=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kvstore serve not ready within {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 15) -> int | None:
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
