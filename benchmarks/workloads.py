"""What the load looks like: operation mix, key choice, value size, connections.

Every target (kvstore over HTTP, the raw driver, etcd) replays the same key sequence, drawn once
per run from a fixed seed, so "the same data and access pattern" holds exactly: the sequence is a
file the wrk script and the raw-driver loader both read. Zipfian choice ranks the keys in a random
order, so that the hot keys fall on every shard rather than on whichever owns ``k0000000``.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 20261123
SEQUENCE_LENGTH = 200_000
ZIPF_S = 0.99
KEY_PREFIX = "bench/"


@dataclass(frozen=True)
class Workload:
    """One load shape; ``name`` is what tables and charts call it."""

    mix: str  # "read-99", "read-50", "write-only" or "read-only"
    distribution: str  # "uniform" or "zipf"
    value_size: int
    connections: int

    @property
    def read_fraction(self) -> float:
        return MIXES[self.mix]

    @property
    def name(self) -> str:
        return f"{self.mix} {self.distribution} {format_size(self.value_size)} c{self.connections}"


MIXES = {"read-only": 1.0, "read-99": 0.99, "read-50": 0.5, "write-only": 0.0}
"""Read fraction per mix: 99:1 is the seed design's replica case, 1:1 chat history."""


def format_size(size: int) -> str:
    return f"{size // 1024}KiB" if size >= 1024 and size % 1024 == 0 else f"{size}B"


def key_name(value_size: int, index: int) -> str:
    """Keys of each value size are a set of their own, so both sizes stay loaded side by side."""
    return f"{KEY_PREFIX}v{value_size}/{index:07d}"


def value_bytes(size: int) -> bytes:
    """A fixed, incompressible-looking value (same bytes for every key and target)."""
    return np.random.default_rng(SEED).integers(0, 256, size, dtype=np.uint8).tobytes()


def matrix(mixes: list[str], distributions: list[str], value_sizes: list[int], connections: int) -> list[Workload]:
    return [
        Workload(mix, distribution, size, connections)
        for size in value_sizes
        for distribution in distributions
        for mix in mixes
    ]


def key_indexes(distribution: str, keys: int, length: int = SEQUENCE_LENGTH) -> np.ndarray:
    """``length`` key indexes in ``[0, keys)``: uniform, or Zipfian with exponent ``ZIPF_S`` over ranks."""
    rng = np.random.default_rng(SEED)
    if distribution == "uniform":
        return rng.integers(0, keys, length)
    if distribution != "zipf":
        raise ValueError(f"unknown key distribution {distribution!r}")
    weights = 1.0 / np.arange(1, keys + 1, dtype=np.float64) ** ZIPF_S
    cdf = np.cumsum(weights)
    ranks = np.searchsorted(cdf, rng.random(length) * cdf[-1])
    chosen: np.ndarray = rng.permutation(keys)[np.minimum(ranks, keys - 1)]
    return chosen


def hottest_share(indexes: np.ndarray, top: int = 10) -> float:
    """Fraction of the sequence that goes to its ``top`` most frequent keys (how skewed it is)."""
    counts = np.bincount(indexes)
    return float(np.sort(counts)[-top:].sum() / len(indexes))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
