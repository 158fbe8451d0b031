"""The console's data endpoints: ``GET /v1/status`` (the cluster's state, from ``status.py``)
and ``GET /v1/locate/{key}`` (which shard owns a key now, and where it may still be during a move)."""

import orjson
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kvstore import status
from kvstore.errors import InvalidRequest
from kvstore.http.endpoints import LOCATE, STATUS
from kvstore.http.kv import key_from, query
from kvstore.http.problems import problem
from kvstore.router import Router

_NO_PARAMS = frozenset[str]()
ROWS_MAX_AGE_S = 30.0  # row counts in /v1/status are at most this old (each count costs the shard a scan)


class _KeyConvertor(PathConvertor):
    """Starlette's ``path`` stops at a newline (its ``.`` does not match one); a key may hold one."""

    regex = "(?s:.*)"


register_url_convertor("key", _KeyConvertor())


def cluster_routes(router: Router, timeout_s: float) -> list[Route]:
    """``timeout_s`` bounds each shard's part of a status answer: a down shard is reported, not waited for."""
    locate_prefix = (LOCATE.prefix or "").encode()
    counts = status.RecentCounts(ROWS_MAX_AGE_S)

    async def cluster_status(request: Request) -> Response:
        try:
            query(request.scope, _NO_PARAMS)
        except InvalidRequest as error:
            return problem(400, str(error))
        found = await status.cluster_status(router.shards, router.record, timeout_s, probe_replicas=False, count=counts)
        body = {**found.to_json(), **status.server_metrics()}
        return Response(orjson.dumps(body), media_type="application/json")

    async def locate(request: Request) -> Response:
        try:
            query(request.scope, _NO_PARAMS)
            key = key_from(request.scope, locate_prefix)
        except InvalidRequest as error:
            return problem(400, str(error))
        topology = router.topology
        placement = topology.place(key)
        body = {
            "key": key,
            "shard": placement.owner,
            "fallback": placement.fallback,
            "ring": {"epoch": topology.epoch, "phase": topology.phase.value},
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return [
        Route(STATUS.path, cluster_status, methods=list(STATUS.methods)),
        Route(LOCATE.path.replace("{key}", "{key:key}"), locate, methods=list(LOCATE.methods)),
    ]
