"""Every HTTP endpoint, declared once: path, methods, the scope each method needs, its metric label.

Admission (auth, load shedding), metrics and the OpenAPI document all read this table, so an
endpoint cannot be added for one of them and forgotten by another.
"""

from dataclasses import dataclass

KEY_PREFIX = "/v1/kv/"
READ, WRITE, ADMIN = "read", "write", "admin"


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: each is declared once
class Endpoint:
    """``path`` is exact, or a template ending in ``{key}`` that matches everything after its prefix.

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
ENDPOINTS = (KEYS, LIST, BATCH, TXN, HEALTHZ, READYZ, METRICS, OPENAPI)
_EXACT = {endpoint.path: endpoint for endpoint in ENDPOINTS if endpoint is not KEYS}


def find(path: str) -> Endpoint | None:
    """The endpoint serving ``path``, or None (404)."""
    if path.startswith(KEY_PREFIX):
        return KEYS
    return _EXACT.get(path)
