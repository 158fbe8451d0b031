"""An answer as the lean path sends it: status, raw headers and body, with no Response object.

``problem`` builds RFC 9457 problem+json replies; ``problems.py`` keeps the table that maps our
errors to statuses, and Starlette responses for the endpoints Starlette still serves.
"""

from dataclasses import dataclass, field
from http import HTTPStatus

import orjson
from starlette.types import Send

PROBLEM_JSON = b"application/problem+json"
JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
RawHeaders = list[tuple[bytes, bytes]]
_BODILESS = frozenset({204, 304})  # statuses that never carry a body, nor a Content-Length


@dataclass(slots=True)
class Reply:
    status: int
    headers: RawHeaders = field(default_factory=list)
    body: bytes = b""
    content_type: bytes | None = None


def problem_document(status: int, detail: str, extensions: dict[str, object]) -> bytes:
    """The problem+json body; ``title`` is the status phrase, as ``type: about:blank`` requires."""
    document = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    document.update(extensions)
    return orjson.dumps(document)


def problem(status: int, detail: str, headers: RawHeaders | None = None, **extensions: object) -> Reply:
    return Reply(status, headers or [], problem_document(status, detail, extensions), PROBLEM_JSON)


async def send_reply(send: Send, reply: Reply, request_id: bytes, *, head: bool = False) -> None:
    """Send ``reply`` with its ``X-Request-ID``; a HEAD answer has the GET's headers and no body."""
    headers = reply.headers
    if reply.status not in _BODILESS:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    if reply.content_type is not None:
        headers.append((b"content-type", reply.content_type))
    headers.append((b"x-request-id", request_id))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})
