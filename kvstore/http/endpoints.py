"""Every HTTP endpoint, declared once: path, methods, the scope each method needs, its metric label.

Admission (auth, load shedding), metrics and the OpenAPI document all read this table, so an
endpoint cannot be added for one of them and forgotten by another.
"""

from dataclasses import dataclass

KEY_PREFIX = "/v1/kv/"
READ, WRITE, ADMIN = "read", "write", "admin"


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: each is declared once
class Endpoint:
    """``path`` is exact, or a template ending in ``{name}`` that matches everything after its prefix.

    ``scopes`` maps each allowed method to the token scope it needs (None: open to everyone);
    ``shed``: counted against ``max_in_flight`` and refused with 503 beyond it (probes and
    metrics never are, so an overloaded worker still reports itself).
    """

    path: str
    scopes: dict[str, str | None]
    shed: bool = False
    name: str | None = None  # the metric label, where the path is not one

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.scopes)

    @property
    def prefix(self) -> str | None:
        """What a templated path starts with (``/v1/locate/`` for ``/v1/locate/{key}``); None when exact."""
        return self.path[: self.path.index("{")] if self.path.endswith("}") else None

    def label(self, method: str) -> str:
        """The bounded ``op`` label of a request: the key method, else the endpoint's name."""
        if method not in self.scopes:
            return "other"
        if self is KEYS:
            return method.lower()
        return self.name or self.path.lstrip("/")


KEYS = Endpoint(
    KEY_PREFIX + "{key}",
    {"GET": READ, "HEAD": READ, "PUT": WRITE, "PATCH": WRITE, "DELETE": WRITE},
    shed=True,
)
LIST = Endpoint("/v1/kv", {"GET": READ}, shed=True, name="list")
# Write scope is checked by the handler too when a batch holds a write (the body decides).
BATCH = Endpoint("/v1/batch", {"POST": READ}, shed=True, name="batch")
TXN = Endpoint("/v1/txn", {"POST": READ}, shed=True, name="txn")
HEALTHZ = Endpoint("/healthz", {"GET": None})
READYZ = Endpoint("/readyz", {"GET": None})
METRICS = Endpoint("/metrics", {"GET": ADMIN})
OPENAPI = Endpoint("/openapi.json", {"GET": None})
# The console's data: the cluster's state (status.py), and which shard owns a key.
STATUS = Endpoint("/v1/status", {"GET": READ})
LOCATE = Endpoint("/v1/locate/{key}", {"GET": READ})
# The console's page and its files hold no data, so they are open: the data endpoints ask for a token.
CONSOLE = Endpoint("/ui", {"GET": None})
CONSOLE_FILES = Endpoint("/ui/{file}", {"GET": None})
ENDPOINTS = (KEYS, LIST, BATCH, TXN, HEALTHZ, READYZ, METRICS, OPENAPI, STATUS, LOCATE, CONSOLE, CONSOLE_FILES)
_EXACT = {endpoint.path: endpoint for endpoint in ENDPOINTS if endpoint.prefix is None}
_TEMPLATED = tuple((prefix, endpoint) for endpoint in ENDPOINTS if (prefix := endpoint.prefix) and endpoint is not KEYS)


def find(path: str) -> Endpoint | None:
    """The endpoint serving ``path``, or None (404)."""
    if path.startswith(KEY_PREFIX):
        return KEYS
    exact = _EXACT.get(path)
    if exact is not None:
        return exact
    for prefix, endpoint in _TEMPLATED:
        if path.startswith(prefix):
            return endpoint
    return None
