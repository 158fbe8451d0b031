"""Access control, TLS and request limits where the process matters: its log, its TLS socket, its memory.
Scopes and load shedding are tested in process (tests/http)."""

import contextlib
import hashlib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.server import ServerProcess

READER, WRITER, ADMIN = "reader-secret-0123456789", "writer-secret-0123456789", "admin-secret-0123456789"


def config_with(tmp_path: Path, **sections: object) -> Path:
    shards = [{"name": "s0", "backend": "sqlite", "primary": "s0.db"}]
    path = tmp_path / "shards.yaml"
    path.write_text(yaml.safe_dump({"shards": shards, **sections}))
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tokens = [
        {"name": "reader", "token": "${READER_TOKEN}", "scope": "read"},
        {"name": "writer", "token_sha256": hashlib.sha256(WRITER.encode()).hexdigest(), "scope": "write"},
        {"name": "ops", "token": ADMIN, "scope": "admin"},
    ]
    config = config_with(tmp_path_factory.mktemp("auth"), auth={"tokens": tokens})
    server = ServerProcess(config, env={"READER_TOKEN": READER}).start()
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_never_appear_in_the_server_log(secured: ServerProcess) -> None:
    with httpx.Client(base_url=secured.url) as client:
        assert client.get("/v1/kv/k", headers=bearer("wrong-token-0123456789")).status_code == 401
        assert client.put("/v1/kv/k", content=b"v", headers=bearer(READER)).status_code == 403
        assert client.put("/v1/kv/k", content=b"v", headers=bearer(WRITER)).status_code == 201
        assert client.get("/metrics", headers=bearer(ADMIN)).status_code == 200
    for secret in (READER, WRITER, ADMIN):
        assert secret not in secured.log()


def test_no_tokens_on_a_public_address_is_announced(tmp_path: Path) -> None:
    server = ServerProcess(config_with(tmp_path), "--host", "0.0.0.0")
    server.url = f"http://127.0.0.1:{server.port}"
    server.start()
    server.stop()
    assert "NO ACCESS CONTROL" in server.log()


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject,
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ServerProcess(config_with(tmp_path), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), https=True)
    server.start()
    try:
        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=cert)) as client:
            assert client.put("/v1/kv/tls", content=b"secret").status_code == 201
            assert client.get("/v1/kv/tls").content == b"secret"
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        server.stop()


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def send_huge_body(port: int, chunked: bool, size: int) -> bytes:
    """Send a PUT with a ``size``-byte body as fast as the server takes it; return the answer's start."""
    chunk = b"x" * (1 << 20)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"PUT /v1/kv/huge HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(size // len(chunk)):
                connection.sendall(b"100000\r\n" + chunk + b"\r\n" if chunked else chunk)
        return connection.recv(64)


def test_memory_stays_flat_under_100_bodies_of_100_mib(tmp_path: Path) -> None:
    server = ServerProcess(config_with(tmp_path)).start()
    try:
        assert server.process is not None
        before = rss_mib(server.process.pid)
        answers = {send_huge_body(server.port, chunked=i % 2 == 1, size=100 << 20)[:12] for i in range(100)}
        after = rss_mib(server.process.pid)
    finally:
        server.stop()
    assert answers == {b"HTTP/1.1 413"}
    assert after - before < 32, f"RSS grew from {before:.0f} MiB to {after:.0f} MiB"
