"""What the client retries, and what it never repeats (kvstore/client/operations.py, protocol.py).

The server is scripted here (httpx.MockTransport) because the subject is the client's decision
for each kind of failure, several of which a healthy server never produces on cue (a reset after
the request was sent, a proxy's 502); the same client against real servers, including a real 503
+ Retry-After, is in tests/http/test_client.py and tests/e2e/test_client.py.
"""

import time
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from kvstore.client import (
    AsyncClient,
    Client,
    Compare,
    Get,
    Put,
    RetryPolicy,
    ServerError,
    Unavailable,
    WriteOutcomeUnknown,
)
from kvstore.client.protocol import retry_after_s

Answer = httpx.Response | Exception


def written() -> httpx.Response:
    return httpx.Response(200, json={"key": "k", "version": 7, "expires_at": None}, headers={"etag": '"7"'})


def value() -> httpx.Response:
    return httpx.Response(200, content=b"v", headers={"etag": '"7"'})


FAST = RetryPolicy(attempts=3, backoff_s=0, max_retry_after_s=1)


def unavailable(retry_after: str = "0", **problem: object) -> httpx.Response:
    document = {"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "shard s0: down"}
    return httpx.Response(
        503,
        content=orjson.dumps({**document, "shard": "s0", **problem}),
        headers={"content-type": "application/problem+json", "retry-after": retry_after},
    )


def scripted(*answers: Answer) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering each request with the next of ``answers`` (an exception is raised)."""
    sent: list[httpx.Request] = []
    queue: Iterator[Answer] = iter(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        reply = next(queue)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return httpx.MockTransport(answer), sent


def client(*answers: Answer, retry: RetryPolicy = FAST) -> tuple[Client, list[httpx.Request]]:
    transport, sent = scripted(*answers)
    return Client("http://kv", transport=transport, retry=retry), sent


def reset(request_text: str = "connection reset") -> httpx.ReadError:
    return httpx.ReadError(request_text)


READS: dict[str, Callable[[Client], object]] = {"get": lambda kv: kv.get("k"), "ttl": lambda kv: kv.ttl("k")}
WRITES: dict[str, Callable[[Client], object]] = {
    "put": lambda kv: kv.put("k", b"v"),
    "conditional put": lambda kv: kv.put("k", b"v", if_match=6),
    "delete": lambda kv: kv.delete("k"),
    "expire": lambda kv: kv.expire("k", 5),
}


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("failure", [unavailable(), reset(), httpx.ReadTimeout("slow"), httpx.Response(502)])
def test_reads_are_retried_after_any_failure(read: str, failure: Answer) -> None:
    kv, sent = client(failure, value())
    READS[read](kv)
    assert len(sent) == 2


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize(
    "failure",
    [unavailable(write_outcome="unknown"), reset(), httpx.ReadTimeout("slow"), httpx.Response(502)],
    ids=["server said unknown", "reset after sending", "read timeout", "proxy 502"],
)
def test_a_write_whose_outcome_is_unknown_is_never_repeated(write: str, failure: Answer) -> None:
    kv, sent = client(failure, written())
    with pytest.raises(WriteOutcomeUnknown) as unknown:
        WRITES[write](kv)
    assert len(sent) == 1
    assert isinstance(unknown.value, Unavailable)


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize(
    "failure",
    [unavailable(), httpx.ConnectError("refused"), httpx.ConnectTimeout("no route")],
    ids=["503 not applied", "connect refused", "connect timeout"],
)
def test_a_write_that_was_not_applied_is_retried(write: str, failure: Answer) -> None:
    kv, sent = client(failure, httpx.Response(204) if write == "delete" else written())
    WRITES[write](kv)
    assert len(sent) == 2
    assert sent[0].content == sent[1].content and sent[0].headers == sent[1].headers


def test_retry_after_is_waited_for_and_attempts_are_bounded() -> None:
    kv, sent = client(unavailable("1"), unavailable("1"), value(), retry=RetryPolicy(attempts=2, backoff_s=0))
    started = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        kv.get("k")
    assert time.monotonic() - started >= 1.0, "one wait of Retry-After: 1"
    assert len(sent) == 2
    assert (failed.value.retry_after_s, failed.value.shard, failed.value.status) == (1.0, "s0", 503)


def test_a_retry_after_beyond_the_policy_is_raised_at_once() -> None:
    kv, sent = client(unavailable("30"), value())
    with pytest.raises(Unavailable) as failed:
        kv.get("k")
    assert len(sent) == 1 and failed.value.retry_after_s == 30.0


def test_no_retries_at_all_when_asked() -> None:
    kv, sent = client(reset(), value(), retry=RetryPolicy(attempts=1))
    with pytest.raises(Unavailable, match="ReadError: connection reset"):
        kv.get("k")
    assert len(sent) == 1


def test_an_answer_outside_the_api_is_a_server_error() -> None:
    kv, _ = client(httpx.Response(500, text="boom"), httpx.Response(200, text="no etag"))
    with pytest.raises(ServerError) as failed:
        kv.get("k")
    assert failed.value.status == 500
    with pytest.raises(ServerError, match="ETag"):
        kv.get("k")


async def test_the_async_client_makes_the_same_decisions() -> None:
    transport, sent = scripted(unavailable(), value(), reset())
    async with AsyncClient("http://kv", transport=transport, retry=FAST) as kv:
        assert (await kv.get("k")).value == b"v"
        with pytest.raises(WriteOutcomeUnknown):
            await kv.put("k", b"v")
    assert [request.method for request in sent] == ["GET", "GET", "PUT"]


def test_requests_carry_the_token_the_timeout_and_the_encoded_key() -> None:
    transport, sent = scripted(value())
    with Client("http://kv:8080/", token="secret-token-0123456789", transport=transport, timeout_s=2.5) as kv:
        kv.get("a/../b c.d")
        assert "secret" not in repr(kv)
    (request,) = sent
    assert request.url.raw_path == b"/v1/kv/a/%2E%2E/b%20c%2Ed"
    transport, sent = scripted(value())
    with Client("http://proxy/kvstore/", transport=transport) as kv:
        kv.get("k")
    assert sent[0].url.raw_path == b"/kvstore/v1/kv/k"
    assert request.headers["authorization"] == "Bearer secret-token-0123456789"
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


def test_retry_after_as_seconds_or_a_date() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    in_ten = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8 < (retry_after_s(in_ten) or 0) <= 10


def batch_answer(*results: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"results": list(results)})


def test_a_batch_is_retried_only_when_it_reads_or_was_not_applied() -> None:
    got = {"status": 200, "key": "k", "version": 7, "expires_at": None, "value_b64": "dg=="}
    kv, sent = client(reset(), batch_answer(got))
    assert kv.batch([Get("k")])[0].value == b"v"
    assert len(sent) == 2
    kv, sent = client(reset(), batch_answer(got))
    with pytest.raises(WriteOutcomeUnknown):
        kv.batch([Get("k"), Put("k", b"v")])
    assert len(sent) == 1
    kv, sent = client(unavailable(), batch_answer(got, {"status": 201, "key": "k", "version": 8, "expires_at": None}))
    assert [result.status for result in kv.batch([Get("k"), Put("k", b"v")])] == [200, 201]
    assert len(sent) == 2


def test_a_batch_ops_unknown_outcome_is_its_error() -> None:
    problem = {"status": 503, "detail": "shard s0: no answer", "shard": "s0", "write_outcome": "unknown"}
    kv, _ = client(batch_answer({"status": 503, "key": "k", "error": problem}))
    (result,) = kv.batch([Put("k", b"v")])
    assert isinstance(result.error, WriteOutcomeUnknown) and result.error.shard == "s0" and not result.ok


def test_a_txn_that_writes_is_never_repeated_once_sent() -> None:
    read = {"succeeded": True, "results": [{"status": 200, "key": "k", "version": 7, "expires_at": None}]}
    kv, sent = client(reset(), httpx.Response(200, json=read))
    assert kv.txn(compare=[Compare("k", exists=True)], success=[Get("k")]).succeeded
    assert len(sent) == 2, "a read-only txn is retried"
    kv, sent = client(reset(), httpx.Response(200, json=read))
    with pytest.raises(WriteOutcomeUnknown):
        kv.txn(success=[Put("k", b"v")])
    assert len(sent) == 1
