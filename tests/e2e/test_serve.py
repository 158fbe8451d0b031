"""What only a real `kvstore serve` process shows, on every backend: two front ends sharing shards, and
its log. The HTTP logic itself is tested in process (tests/http)."""

import uuid
from urllib.parse import quote

import httpx

from tests.support.server import ServerProcess


def url(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def test_two_front_ends_see_each_others_writes(server: ServerProcess, other_server: ServerProcess) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(20):
            key = f"k-{uuid.uuid4().hex}"
            client.put(server.url + url(key), content=b"from A")
            assert client.get(other_server.url + url(key)).content == b"from A"
            client.delete(other_server.url + url(key))
            assert client.get(server.url + url(key)).status_code == 404


def test_keys_never_appear_in_the_server_log(server: ServerProcess) -> None:
    key = f"secret-key-name-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.put(url(key), content=b"v")
        client.get(url(key))
        client.get(url(key) + "?bad=1")
    assert key not in server.log()
