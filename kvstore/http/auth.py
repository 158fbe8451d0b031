"""Bearer-token access control (optional): scopes ``read`` < ``write`` < ``admin``.

Which scope a request needs is the endpoint table's to say (``endpoints.py``): probes and the
public contract are open, ``/metrics`` needs ``admin``, reading keys ``read``, writing them
``write``. Presented tokens are hashed and compared against every configured digest in constant
time; tokens are never logged.
"""

import hashlib
import hmac

from kvstore.config import SCOPES, ApiToken
from kvstore.http import reply
from kvstore.http.reply import Reply

_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}


def bearer_token(authorization: bytes | None) -> bytes | None:
    if authorization is None:
        return None
    kind, _, token = authorization.partition(b" ")
    return token.strip() if kind.lower() == b"bearer" and token.strip() else None


def match(presented: bytes, tokens: tuple[ApiToken, ...]) -> ApiToken | None:
    """The token whose digest equals the presented token's; every digest is compared, whatever matches."""
    digest = hashlib.sha256(presented).digest()
    found = None
    for token in tokens:
        if hmac.compare_digest(digest, token.sha256):
            found = token
    return found


def refusal(authorization: bytes | None, needed: str, tokens: tuple[ApiToken, ...]) -> Reply | None:
    """401 without a valid token, 403 for a scope below ``needed``; None when the request may pass."""
    presented = bearer_token(authorization)
    token = None if presented is None else match(presented, tokens)
    if token is None:
        return reply.problem(
            401, "a valid bearer token is required", [(b"www-authenticate", b'Bearer realm="kvstore"')]
        )
    if _RANK[token.scope] < _RANK[needed]:
        challenge = f'Bearer realm="kvstore", error="insufficient_scope", scope="{needed}"'.encode()
        detail = f"this token's scope is {token.scope!r}; {needed!r} is required"
        return reply.problem(403, detail, [(b"www-authenticate", challenge)])
    return None
