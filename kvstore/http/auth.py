"""Bearer-token access control (optional): scopes ``read`` < ``write`` < ``admin``.

``/healthz``, ``/readyz`` and ``/openapi.json`` stay open (probes and the public contract);
``/metrics`` needs ``admin``; reading keys needs ``read``, writing them ``write``. Presented
tokens are hashed and compared against every configured digest in constant time; tokens are
never logged.
"""

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from kvstore.config import SCOPES, ApiToken
from kvstore.http.problems import problem

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
_READ_METHODS = frozenset({"GET", "HEAD"})
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


def required_scope(method: str, path: str) -> str | None:
    if path in _OPEN_PATHS:
        return None
    if path == "/metrics":
        return "admin"
    return "read" if method in _READ_METHODS else "write"


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.partition(b" ")
            return token.strip() if kind.lower() == b"bearer" and token.strip() else None
    return None


def match(presented: bytes, tokens: tuple[ApiToken, ...]) -> ApiToken | None:
    """The token whose digest equals the presented token's; every digest is compared, whatever matches."""
    digest = hashlib.sha256(presented).digest()
    found = None
    for token in tokens:
        if hmac.compare_digest(digest, token.sha256):
            found = token
    return found


class BearerAuth:
    def __init__(self, app: ASGIApp, tokens: tuple[ApiToken, ...]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (needed := required_scope(scope["method"], scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        presented = bearer_token(scope)
        token = None if presented is None else match(presented, self.tokens)
        if token is None:
            challenge = {"WWW-Authenticate": 'Bearer realm="kvstore"'}
            await problem(401, "a valid bearer token is required", headers=challenge)(scope, receive, send)
            return
        if _RANK[token.scope] < _RANK[needed]:
            challenge = {"WWW-Authenticate": f'Bearer realm="kvstore", error="insufficient_scope", scope="{needed}"'}
            detail = f"this token's scope is {token.scope!r}; {needed!r} is required"
            await problem(403, detail, headers=challenge)(scope, receive, send)
            return
        await self.app(scope, receive, send)
