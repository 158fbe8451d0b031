"""``GET /v1/kv``: list keys in byte order, one page per request, following an opaque cursor.

The cursor carries the listing's prefix and direction with its position, so a client pages with
``cursor=`` alone (plus ``limit``/``values`` if it likes) and cannot mix one listing's position
with another's prefix. It is not signed: a forged cursor can only start a listing at another
position, which ``start_after`` allows anyway.
"""

import base64
import binascii

import orjson
from starlette.types import Receive, Scope

from kvstore.errors import InvalidRequest
from kvstore.http import reply
from kvstore.http.kv import RequestHeaders, query, wants_strong
from kvstore.http.reply import Reply
from kvstore.keys import MAX_KEY_CHARS, validate_key
from kvstore.listing import DEFAULT_LIMIT, MAX_LIMIT, ListQuery, Page
from kvstore.store import KeyValueStore

_PARAMS = frozenset({"prefix", "start_after", "limit", "reverse", "values", "cursor", "consistency", "after"})
_CURSOR_REPLACES = ("prefix", "start_after", "reverse")
_MAX_CURSOR_CHARS = 2048


class ListRoute:
    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    async def handle(self, scope: Scope, receive: Receive, headers: RequestHeaders) -> Reply:
        params = query(scope, _PARAMS)
        strong = wants_strong(params, headers)
        list_query = parse_list_query(params)
        page = await self.store.list_keys(
            list_query, strong=strong, read_after=params.get("after") or headers.read_after
        )
        return Reply(200, [], render_page(page, list_query), reply.JSON)


def parse_list_query(params: dict[str, str]) -> ListQuery:
    limit = _limit(params.get("limit"))
    values = _flag(params, "values")
    if "cursor" in params:
        given = [name for name in _CURSOR_REPLACES if name in params]
        if given:
            raise InvalidRequest(f"cursor carries the listing's prefix, position and direction; drop {given[0]!r}")
        prefix, position, reverse = decode_cursor(params["cursor"])
        return ListQuery(prefix, position, reverse, limit, values)
    prefix = params.get("prefix", "")
    if len(prefix) > MAX_KEY_CHARS or "\x00" in prefix:
        raise InvalidRequest(f"prefix must be at most {MAX_KEY_CHARS} characters without NUL")
    start_after = params.get("start_after")
    if start_after is not None:
        validate_key(start_after)
    return ListQuery(prefix, start_after, _flag(params, "reverse"), limit, values)


def render_page(page: Page, list_query: ListQuery) -> bytes:
    items = []
    for item in page.items:
        entry: dict[str, object] = {"key": item.key, "version": item.row.version, "expires_at": item.row.expires_at_ms}
        if list_query.values:
            entry["value_b64"] = base64.b64encode(item.row.value or b"").decode()
        items.append(entry)
    cursor = None if page.next_after is None else encode_cursor(list_query.prefix, page.next_after, list_query.reverse)
    return orjson.dumps({"items": items, "next": cursor})


def encode_cursor(prefix: str, after: str, reverse: bool) -> str:
    document = orjson.dumps({"p": prefix, "a": after, "r": reverse})
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, bool]:
    """``(prefix, after, reverse)``; anything this server did not issue is a 400."""
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError
        document = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        prefix, after, reverse = document["p"], document["a"], document["r"]
        if not (isinstance(prefix, str) and isinstance(after, str) and isinstance(reverse, bool)):
            raise ValueError
        validate_key(after)
    except (binascii.Error, ValueError, KeyError, TypeError, InvalidRequest):
        raise InvalidRequest("cursor is not one this server issued; pass the 'next' of a previous page") from None
    return prefix, after, reverse


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= MAX_LIMIT):
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(text)


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false")
    if value not in ("true", "false"):
        raise InvalidRequest(f"{name} must be 'true' or 'false'")
    return value == "true"
