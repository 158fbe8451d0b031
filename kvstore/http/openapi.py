"""The OpenAPI 3.1 document served at ``/openapi.json``: the v1 contract in machine-readable form."""

from typing import Any

from kvstore import __version__
from kvstore.http.batch import MAX_BODY_BYTES, MAX_OPS
from kvstore.http.endpoints import ENDPOINTS
from kvstore.keys import MAX_KEY_CHARS, MAX_TTL_S, TTL_DECIMALS
from kvstore.listing import DEFAULT_LIMIT, MAX_LIMIT, VALUE_BUDGET_BYTES

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_UNAVAILABLE = {"$ref": "#/components/responses/Unavailable"}
CONSISTENCY = {"type": "string", "enum": ["strong", "eventual"]}
_CONSOLE_FILE = {
    "description": "A file of the console",
    "content": {"text/html": {}, "text/javascript": {}, "text/css": {}},
}


def _from_endpoint_table(documented: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The paths in the endpoint table's order, each operation marked with the scope it needs.

    Every endpoint must be documented with exactly its methods (HEAD is GET's): the document is
    built at start-up, so a route added to the table and not here stops the server from starting.
    """
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        operations = documented.pop(endpoint.path)
        methods = {method.lower() for method in endpoint.methods if method != "HEAD"}
        if methods != set(operations) - {"parameters"}:
            raise AssertionError(f"{endpoint.path}: documented {sorted(operations)}, served {sorted(methods)}")
        for method in methods:
            scope = endpoint.scopes[method.upper()]
            if scope is not None:
                operations[method]["security"] = [{"bearer": []}]
                operations[method]["x-kvstore-scope"] = scope
        paths[endpoint.path] = operations
    if documented:
        raise AssertionError(f"documented but not served: {sorted(documented)}")
    return paths


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


def ttl_pattern() -> str:
    """What ``parse_ttl_ms`` accepts, as a regular expression built from its limits.

    Exact but for leading zeros, which the server takes and the document does not offer: a positive
    number of seconds up to ``MAX_TTL_S`` with at most ``TTL_DECIMALS`` decimals.
    """
    decimals = f"(?:\\.\\d{{1,{TTL_DECIMALS}}})?"
    below_max = "|".join(_integers_below(str(MAX_TTL_S)))
    at_max = f"{MAX_TTL_S}(?:\\.0{{1,{TTL_DECIMALS}}})?"
    # A fraction of a second: at least one non-zero digit among its decimals.
    fraction = "|".join(
        "0" * zeros + "[1-9]" + _up_to_digits(TTL_DECIMALS - 1 - zeros) for zeros in range(TTL_DECIMALS)
    )
    return f"^(?:(?:{below_max}){decimals}|{at_max}|0\\.(?:{fraction}))$"


def _integers_below(limit: str) -> list[str]:
    """Alternatives matching every integer from 1 up to ``limit`` (exclusive), without leading zeros."""
    alternatives = [f"[1-9]\\d{{0,{len(limit) - 2}}}"] if len(limit) > 1 else []
    for position, digit in enumerate(int(d) for d in limit):
        lowest = 1 if position == 0 else 0
        if digit > lowest:
            smaller = str(lowest) if digit - 1 == lowest else f"[{lowest}-{digit - 1}]"
            alternatives.append(f"{limit[:position]}{smaller}\\d{{{len(limit) - position - 1}}}")
    return alternatives


def _up_to_digits(count: int) -> str:
    return f"\\d{{0,{count}}}" if count else ""


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _list_operation() -> dict[str, Any]:
    flag = {"type": "string", "enum": ["true", "false"]}
    key = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[^\\x00]+$"}
    item = {
        "type": "object",
        "required": ["key", "version", "expires_at"],
        "properties": {
            "key": {"type": "string"},
            "version": {"type": "integer"},
            "expires_at": {"type": ["integer", "null"], "description": "Epoch ms, null if persistent"},
            "value_b64": {"type": "string", "contentEncoding": "base64", "description": "With values=true"},
        },
    }
    page = {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": item},
            "next": {"type": ["string", "null"], "description": "Pass as ?cursor= for the next page; null at the end"},
        },
    }
    return {
        "summary": "List live keys in byte order of their UTF-8, one page at a time",
        "description": (
            f"Each shard reads at most `limit` rows (live or dead) per page, so a page may be short or empty and"
            f" still have a `next` cursor. With values=true a page also stops at {VALUE_BUDGET_BYTES} bytes of"
            " values. A prefix holding a complete hash tag ({tag}) is answered by one shard. No total count."
        ),
        "parameters": [
            _query("prefix", "Only keys starting with this", {"type": "string", "maxLength": MAX_KEY_CHARS}),
            _query("start_after", "Start after this key (before it with reverse=true)", key),
            _query(
                "limit",
                f"Items per page (default {DEFAULT_LIMIT})",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            ),
            _query("reverse", "Walk from the end (newest first for time-ordered keys)", flag),
            _query("values", "Include each value, base64-encoded", flag),
            _query("cursor", "A previous page's `next`; replaces prefix, start_after and reverse", {"type": "string"}),
            _query("consistency", "strong: read every shard's primary", CONSISTENCY),
            _query("after", "A write's Kv-Read-After token: never answer older than that write", {"type": "string"}),
        ],
        "responses": {
            "200": {"description": "One page", "content": {"application/json": {"schema": page}}},
            "400": _PROBLEM,
            "503": _UNAVAILABLE,
        },
    }


def op_schema(max_value_bytes: int) -> dict[str, Any]:
    """One key's operation inside a batch or a transaction."""
    return {
        "type": "object",
        "required": ["op", "key"],
        "properties": {
            "op": {"type": "string", "enum": ["get", "put", "delete", "incr"]},
            "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
            "value_b64": {
                "type": "string",
                "contentEncoding": "base64",
                "description": f"put: the value, at most {max_value_bytes} bytes decoded",
            },
            "ttl": {"type": ["number", "string"], "description": "put: seconds until expiry"},
            "if_match": {"type": ["string", "integer"], "description": "put/delete: an ETag, a version or '*'"},
            "if_none_match": {"type": "string", "enum": ["*"], "description": "put: create only"},
            "by": {"type": "integer", "description": "incr: the increment (default 1)"},
        },
    }


RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "key"],
    "properties": {
        "status": {"type": "integer", "description": "The status the op's single-key request would answer"},
        "key": {"type": ["string", "null"]},
        "version": {"type": "integer"},
        "expires_at": {"type": ["integer", "null"]},
        "value_b64": {"type": "string", "description": "get: the value"},
        "value": {"type": "integer", "description": "incr: the counter's new value"},
        "read_after": {"type": "string", "description": "writes on shards with replicas: a read-after token"},
        "error": {"$ref": "#/components/schemas/Problem"},
    },
}


def _batch_operation(max_value_bytes: int) -> dict[str, Any]:
    op = op_schema(max_value_bytes)

    return {
        "summary": "Many keys' operations in one request, each answered as its own request (not atomic)",
        "description": (
            f"At most {MAX_OPS} ops and {MAX_BODY_BYTES} bytes of JSON. Ops on the same key apply in their order;"
            " the rest are grouped per shard and kind into one statement each. Needs the read scope, or the write"
            " scope when any op writes."
        ),
        "parameters": [
            _query("consistency", "strong: the gets read primaries", CONSISTENCY),
            _query("after", "A write's Kv-Read-After token, for the gets", {"type": "string"}),
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["ops"],
                        "properties": {
                            "ops": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_OPS,
                                "items": op,
                            }
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "One result per op, in order",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["results"],
                            "properties": {"results": {"type": "array", "items": RESULT_SCHEMA}},
                        }
                    }
                },
            },
            "400": _PROBLEM,
            "403": _PROBLEM,
            "413": _PROBLEM,
            "503": _UNAVAILABLE,
        },
    }


def _txn_operation(max_value_bytes: int) -> dict[str, Any]:
    op = op_schema(max_value_bytes)
    ops = {"type": "array", "items": op}
    compare = {
        "type": "object",
        "required": ["key"],
        "minProperties": 2,
        "maxProperties": 2,
        "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
            "version": {"type": "integer", "description": "the key is live at this version (its ETag)"},
            "absent": {"type": "boolean", "enum": [True]},
            "exists": {"type": "boolean", "enum": [True]},
        },
    }
    return {
        "summary": "If every compare holds, the success ops, else the failure ops: one database transaction",
        "description": (
            "Every key must live on one shard (422 otherwise; hash tags put keys together). Either every op of"
            " the chosen branch applies or none does: an op that fails answers with its own status (412, 409)"
            " and nothing is applied. Needs the write scope when any op writes."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"compare": {"type": "array", "items": compare}, "success": ops, "failure": ops},
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "Which branch ran, and each of its ops' results",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["succeeded", "results"],
                            "properties": {
                                "succeeded": {"type": "boolean"},
                                "results": {"type": "array", "items": RESULT_SCHEMA},
                            },
                        }
                    }
                },
            },
            "400": _PROBLEM,
            "403": _PROBLEM,
            "409": _PROBLEM,
            "412": _PROBLEM,
            "413": _PROBLEM,
            "422": _PROBLEM,
            "503": _UNAVAILABLE,
        },
    }


def openapi_document(max_value_bytes: int) -> dict[str, Any]:
    etag = _header('Strong entity-tag of the current version, e.g. "1795435794045000"', {"type": "string"})
    expires = _header("Absolute expiry in epoch milliseconds (absent for persistent keys)", {"type": "integer"})
    read_after = _header(
        "Read-your-writes token (shards with replicas): pass it back as ?after= or Kv-Read-After on a GET",
        {"type": "string"},
    )
    written = {
        "description": "The key's new state",
        "headers": {"ETag": etag, "Expires-At": expires, "Kv-Read-After": read_after},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Written"}}},
    }
    key_param = {
        "name": "key",
        "in": "path",
        "required": True,
        "description": f"1..{MAX_KEY_CHARS} characters of UTF-8 (percent-encoded; may contain '/'), no NUL",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[^\\x00]+$"},
    }
    ttl_param = {
        "name": "ttl",
        "in": "query",
        "description": (
            f"Seconds until expiry: > 0, at most {TTL_DECIMALS} decimals, at most {MAX_TTL_S} seconds (100 years)"
        ),
        "schema": {"type": "string", "pattern": ttl_pattern()},
    }
    if_match = {
        "name": "If-Match",
        "in": "header",
        "description": 'Only if the current version has this ETag ("*": only if the key is live); else 412',
        "schema": {"type": "string", "pattern": r'^\s*(?:\*|(?:W/)?"[^"]*")\s*$'},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kvstore",
            "version": __version__,
            "description": "Key-value store over SQL shards",
        },
        "paths": _from_endpoint_table(
            {
                "/v1/kv/{key}": {
                    "parameters": [key_param],
                    "get": {
                        "summary": "Read a value (from a replica in rotation unless strong or read-after rules it out)",
                        "parameters": [
                            if_match,
                            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                            {
                                "name": "consistency",
                                "in": "query",
                                "description": "strong: read from the shard primary (also as a Consistency header)",
                                "schema": CONSISTENCY,
                            },
                            {
                                "name": "after",
                                "in": "query",
                                "description": (
                                    "A write's Kv-Read-After token, or several (one per shard) comma-separated: "
                                    "never answer older than the write of the token naming the key's shard"
                                ),
                                "schema": {"type": "string"},
                            },
                        ],
                        "responses": {
                            "200": {
                                "description": "The raw value",
                                "headers": {"ETag": etag, "Expires-At": expires},
                                "content": {
                                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                                },
                            },
                            "304": {
                                "description": "Not modified (If-None-Match matched)",
                                "headers": {"ETag": etag},
                            },
                            "400": _PROBLEM,
                            "404": _PROBLEM,
                            "412": _PROBLEM,
                            "503": _UNAVAILABLE,
                        },
                    },
                    "put": {
                        "summary": "Create or replace a value",
                        "parameters": [
                            ttl_param,
                            if_match,
                            {
                                "name": "If-None-Match",
                                "in": "header",
                                "description": "'*': create only (fails if the key is live)",
                                "schema": {"type": "string", "enum": ["*"]},
                            },
                        ],
                        "requestBody": {
                            "required": False,
                            "description": f"The value: opaque bytes, at most {max_value_bytes} bytes",
                            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                        },
                        "responses": {
                            "200": written | {"description": "Replaced a live value"},
                            "201": written | {"description": "Created (no live value existed)"},
                            "400": _PROBLEM,
                            "412": _PROBLEM,
                            "413": _PROBLEM,
                            "503": _UNAVAILABLE,
                        },
                    },
                    "patch": {
                        "summary": (
                            "Change the expiry (ttl) or remove it (persist=true), keeping the value; or add to a"
                            " counter (incr=N)"
                        ),
                        "description": (
                            "Takes no request body (400): the value is changed by PUT. Exactly one of ttl, persist,"
                            " incr. A counter's value is a decimal integer (as Redis INCR takes it); a key without"
                            " a live value starts at 0 with no expiry, a live one keeps its expiry. A value that is"
                            " no integer, or a sum outside the signed 64-bit range, is a 409 and changes nothing."
                        ),
                        "parameters": [
                            ttl_param,
                            {"name": "persist", "in": "query", "schema": {"type": "string", "enum": ["true"]}},
                            {
                                "name": "incr",
                                "in": "query",
                                "description": "Add this signed 64-bit integer to the counter (no If-Match with it)",
                                "schema": {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
                            },
                            if_match,
                        ],
                        "responses": {
                            "200": written
                            | {
                                "description": (
                                    "The key's new state; with incr, the body also has the counter's new `value`"
                                )
                            },
                            "400": _PROBLEM,
                            "404": _PROBLEM,
                            "409": _PROBLEM,
                            "412": _PROBLEM,
                            "503": _UNAVAILABLE,
                        },
                    },
                    "delete": {
                        "summary": "Soft-delete a key",
                        "parameters": [if_match],
                        "responses": {
                            "204": {"description": "Deleted", "headers": {"Kv-Read-After": read_after}},
                            "400": _PROBLEM,
                            "404": _PROBLEM,
                            "412": _PROBLEM,
                            "503": _UNAVAILABLE,
                        },
                    },
                },
                "/v1/kv": {"get": _list_operation()},
                "/v1/batch": {"post": _batch_operation(max_value_bytes)},
                "/v1/txn": {"post": _txn_operation(max_value_bytes)},
                "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "OK"}}}},
                "/readyz": {
                    "get": {
                        "summary": "Every shard primary is reachable",
                        "responses": {"200": {"description": "Ready"}, "503": _UNAVAILABLE},
                    }
                },
                "/metrics": {
                    "get": {
                        "summary": "Prometheus metrics",
                        "responses": {"200": {"description": "Text exposition", "content": {"text/plain": {}}}},
                    }
                },
                "/openapi.json": {
                    "get": {
                        "summary": "This document",
                        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                    }
                },
                "/v1/status": {
                    "get": {
                        "summary": "The cluster as this front end sees it (the console's cluster page)",
                        "description": (
                            "Each shard's reachability, ring share, schema, rows and sweeper backlog (dead rows), its"
                            " replicas' lag and rotation; the ring and any migration's copy progress; this server's"
                            " cumulative request counts and latency histograms per op and sweeper counters per shard"
                            " (rates come from two answers). Always 200 when served: a down shard is reported in it."
                        ),
                        "responses": {
                            "200": {
                                "description": "The cluster's state",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
                            },
                            "400": _PROBLEM,
                        },
                    }
                },
                "/v1/locate/{key}": {
                    "parameters": [key_param],
                    "get": {
                        "summary": "Which shard owns a key (and where it may still be during a migration)",
                        "responses": {
                            "200": {
                                "description": "The key's placement under the ring this front end routes by",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Location"}}},
                            },
                            "400": _PROBLEM,
                            "404": _PROBLEM,
                        },
                    },
                },
                "/ui": {"get": {"summary": "The web console (HTML)", "responses": {"200": _CONSOLE_FILE}}},
                "/ui/{file}": {
                    "parameters": [
                        {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "get": {
                        "summary": "The web console's files (script, style sheet)",
                        "responses": {"200": _CONSOLE_FILE, "404": _PROBLEM},
                    },
                },
            }
        ),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Written": {
                    "type": "object",
                    "required": ["key", "version", "expires_at"],
                    "properties": {
                        "key": {"type": "string"},
                        "version": {"type": "integer"},
                        "value": {"type": "integer", "description": "A counter's new value (PATCH ?incr only)"},
                        "expires_at": {
                            "type": ["integer", "null"],
                            "description": "Epoch ms, null if persistent",
                        },
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["ok", "ring", "shards", "migration", "at", "requests", "sweepers"],
                    "properties": {
                        "ok": {"type": "boolean", "description": "every shard's primary answered with its statistics"},
                        "ring": {"type": "object", "description": "epoch, phase, vnodes_per_weight"},
                        "shards": {
                            "type": "array",
                            "description": "name, backend, weight, share, ok, primary, replicas, schema_version, rows"
                            " (total, live, dead = the sweeper's backlog, with_expiry, methods), error",
                            "items": {"type": "object"},
                        },
                        "migration": {
                            "type": ["object", "null"],
                            "description": "migration, phase, changed_at, sources (copy progress per source shard)",
                        },
                        "at": {"type": "integer", "description": "when the counters were read, epoch ms"},
                        "requests": {
                            "type": "object",
                            "description": "per op: by_status counts, latency {count, sum, buckets [[le, count]]}",
                        },
                        "sweepers": {
                            "type": "object",
                            "description": "per shard: deleted_rows, cycles, stale_ratio, active",
                        },
                    },
                },
                "Location": {
                    "type": "object",
                    "required": ["key", "shard", "fallback", "ring"],
                    "properties": {
                        "key": {"type": "string"},
                        "shard": {"type": "string", "description": "the shard that owns the key"},
                        "fallback": {
                            "type": ["string", "null"],
                            "description": "during a migration, the shard a row not copied yet is read from",
                        },
                        "ring": {"type": "object", "description": "epoch and phase"},
                    },
                },
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "shard": {"type": "string"},
                        "write_outcome": {
                            "type": "string",
                            "enum": ["unknown"],
                            "description": "On a 503 to a write that was sent: it may have been applied",
                        },
                    },
                },
            },
            "responses": {
                "Problem": {
                    "description": "Problem details",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
                "Unavailable": {
                    "description": "The shard is unreachable or timed out; retry after the given delay",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        },
    }
