"""Hypothesis fuzz of raw HTTP requests, below any client library's normalisation.

Odd percent-encoding, invalid UTF-8, NUL, overlong keys and headers, bad ``ttl`` and
``If-Match``, unknown methods, duplicate headers: every answer must be a 4xx (or a success),
never a 5xx, never a hang; and every 4xx our application produces is problem+json. A real
`kvstore serve` on SQLite shards, since uvicorn's HTTP parser is part of what is tested; how each
engine stores what gets through is the backend contract's business (test_node_contract.py).
"""

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import ServerProcess, write_config

RESPONSE_TIMEOUT_S = 10.0
# What uvicorn itself answers to bytes its HTTP parser rejects (our app never sees them).
PARSER_REJECTION = b"Invalid HTTP request received."

percent_bytes = st.binary(min_size=1, max_size=40).map(lambda raw: "".join(f"%{b:02X}" for b in raw))
path_piece = st.one_of(
    st.text(alphabet="abcXYZ019-_.~/", min_size=0, max_size=30),
    percent_bytes,
    st.sampled_from(["%", "%G1", "%0", "%00", "%2F%2F", "..", "%C3%28", "%ED%A0%80", "%F4%90%80%80"]),
    st.just("k" * 300),
)
key_path = st.lists(path_piece, min_size=0, max_size=4).map(lambda parts: "/v1/kv/" + "".join(parts))
query = st.one_of(
    st.just(""),
    st.sampled_from(
        ["?ttl=", "?ttl=-1", "?ttl=1e9", "?ttl=0.0001", "?ttl=99999999999", "?persist=yes", "?ttl=5&ttl=6"]
    ),
    st.text(alphabet="abc=&%?01", max_size=20).map(lambda text: "?" + text),
)
method = st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS", "TRACE", "FOO", "put"])
header_value = st.one_of(
    st.sampled_from(['"1"', "*", 'W/"1"', '"', '"1", "2"', "", " ", '"\x7f"', '"99999999999999999999999"']),
    st.text(alphabet='abc"*, W/0123456789', max_size=30),
    st.just("x" * 8000),
)
header_name = st.sampled_from(["If-Match", "If-None-Match", "Content-Type", "X-Request-ID", "X-Whatever", "Accept"])
headers = st.lists(st.tuples(header_name, header_value), max_size=5)
body = st.one_of(st.just(b""), st.binary(max_size=200))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("raw-requests")
    shards = [str(directory / f"s{index}.db") for index in range(2)]
    process = ServerProcess(write_config(directory / "shards.yaml", "sqlite", shards, max_value_bytes=65536)).start()
    yield process
    process.stop()


def exchange(server: ServerProcess, request: bytes) -> bytes:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=RESPONSE_TIMEOUT_S) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check(response: bytes) -> None:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    status = int(response[9:12])
    assert status < 500, response[:500]
    head, _, payload = response.partition(b"\r\n\r\n")
    if status >= 400 and PARSER_REJECTION not in payload:
        assert b"content-type: application/problem+json" in head.lower(), response[:500]


def test_raw_requests_never_get_a_5xx_or_hang(server: ServerProcess) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=method, path=key_path, query=query, headers=headers, body=body)
    def probe(method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = [f"{method} {path}{query} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        check(exchange(server, request))

    probe()


def test_raw_bytes_in_the_path_and_nul_in_keys(server: ServerProcess) -> None:
    for raw_path in (b"/v1/kv/\xff\xfe", b"/v1/kv/a%00b", b"/v1/kv/%C0%AF", b"/v1/kv/" + b"\xc3\xa9" * 300):
        check(exchange(server, b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))


def test_a_large_declared_body_is_refused_before_it_is_sent(server: ServerProcess) -> None:
    request = b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 104857600\r\n\r\n"
    response = exchange(server, request)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


def test_oversized_headers_are_refused_with_431(server: ServerProcess) -> None:
    request = b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    response = exchange(server, request)
    assert response.startswith(b"HTTP/1.1 431"), response[:200]
    check(response)
