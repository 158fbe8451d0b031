"""The outcome of one bounded load run against one target, whichever tool drove it."""

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """Throughput and latency of one run; ``errors`` counts failed or non-2xx requests."""

    target: str  # "kvstore", "raw", "http-floor", "etcd", "redis", ...
    workload: str
    connections: int
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p99_ms: float
    tool: str  # what drove the load: "wrk", "python", "redis-benchmark"
    cpu_us_per_request: float | None = None  # CPU of the serving process (kvstore) or of the raw loader

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"per_second": round(self.per_second, 1)}
