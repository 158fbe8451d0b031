"""``POST /v1/txn``: etcd's transaction over the keys of one shard.

``{"compare": [{"key": …, "version": N | "absent": true | "exists": true}, …],
"success": [ops], "failure": [ops]}``: when every compare holds, the success ops run, else the
failure ops, all in one database transaction: every op of the chosen branch applies, or (when
one fails) none does. Ops are those of ``/v1/batch``. Every key must live on one shard (422
otherwise, naming the shards): give related keys a common hash tag.
"""

import orjson
from starlette.types import Receive, Scope

from kvstore.config import ApiToken
from kvstore.errors import InvalidRequest
from kvstore.http import auth, reply
from kvstore.http.batch import MAX_OPS, op_from_json, read_json, render_outcome
from kvstore.http.endpoints import WRITE
from kvstore.http.kv import RequestHeaders, query
from kvstore.http.reply import Reply
from kvstore.keys import validate_key
from kvstore.operations import Compare, Op, is_write
from kvstore.store import KeyValueStore

_FIELDS = frozenset({"compare", "success", "failure"})
_NO_PARAMS = frozenset[str]()


class TxnRoute:
    def __init__(self, store: KeyValueStore, max_value_bytes: int, tokens: tuple[ApiToken, ...]) -> None:
        self.store = store
        self.max_value_bytes = max_value_bytes
        self.tokens = tokens

    async def handle(self, scope: Scope, receive: Receive, headers: RequestHeaders) -> Reply:
        query(scope, _NO_PARAMS)
        document = await read_json(receive, headers)
        unknown = sorted(set(document) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"{unknown[0]!r} is not a field of a transaction; it takes compare, success, failure")
        raw_compares, raw_success, raw_failure = (_list(document, name) for name in ("compare", "success", "failure"))
        total = len(raw_compares) + len(raw_success) + len(raw_failure)
        if not 1 <= total <= MAX_OPS:
            raise InvalidRequest(f"a transaction has 1 to {MAX_OPS} compares and ops, this one {total}")
        compares = [_compare(raw, index) for index, raw in enumerate(raw_compares)]
        success = _ops(raw_success, "success", self.max_value_bytes)
        failure = _ops(raw_failure, "failure", self.max_value_bytes)
        if self.tokens and any(is_write(op) for op in (*success, *failure)):
            refused = auth.refusal(headers.authorization, WRITE, self.tokens)
            if refused is not None:
                return refused
        result = await self.store.txn(compares, success, failure)
        ops, raws = (success, raw_success) if result.succeeded else (failure, raw_failure)
        results = [
            render_outcome(op, outcome, raw) for op, outcome, raw in zip(ops, result.outcomes, raws, strict=True)
        ]
        return Reply(200, [], orjson.dumps({"succeeded": result.succeeded, "results": results}), reply.JSON)


def _list(document: dict[str, object], name: str) -> list[object]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise InvalidRequest(f"{name} must be a list")
    return value


def _ops(raws: list[object], branch: str, max_value_bytes: int) -> list[Op]:
    ops = []
    for index, raw in enumerate(raws):
        try:
            ops.append(op_from_json(raw, max_value_bytes))
        except InvalidRequest as error:
            raise InvalidRequest(f"op {index} of the {branch} branch: {error}") from None
    return ops


def _compare(raw: object, index: int) -> Compare:
    where = f"compare {index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
        raise InvalidRequest(
            f'{where}: a compare is {{"key": …, "version": N}}, {{"key": …, "absent": true}} or exists'
        )
    key = validate_key(raw["key"])
    tests = sorted(set(raw) - {"key"})
    if len(tests) != 1 or tests[0] not in ("version", "absent", "exists"):
        raise InvalidRequest(f"{where}: give exactly one of version, absent, exists")
    value = raw[tests[0]]
    if tests[0] == "version":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"{where}: version must be an integer (a key's ETag without quotes)")
        return Compare(key, version=value)
    if value is not True:
        raise InvalidRequest(f"{where}: {tests[0]} must be true")
    return Compare(key, live=tests[0] == "exists")
