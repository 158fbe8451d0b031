"""Consistent-hash ring with virtual nodes and weights (pure, no I/O).

Every shard owns ``weight * vnodes_per_weight`` points on a 64-bit circle; a key belongs to
the first point at or after its own hash, wrapping around. The hash is the first 8 bytes of
BLAKE2b, stable across processes, machines and Python versions (never ``hash()``), so every
front end with the same shard list maps a key to the same shard.
"""

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import blake2b

DEFAULT_VNODES_PER_WEIGHT = 256
_RING_SIZE = 1 << 64


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def hash_tag(key: str) -> str:
    """The part of ``key`` that decides its shard: the text inside its first ``{…}`` pair when that
    is not empty, else the whole key."""
    tag = _first_tag(key)
    return key if tag is None else tag


def prefix_tag(prefix: str) -> str | None:
    """The hash tag that every key starting with ``prefix`` has, or None when they may differ:
    ``prefix`` holds a complete first tag (e.g. ``{chan42}/``), which then is every such key's."""
    return _first_tag(prefix)


def _first_tag(text: str) -> str | None:
    start = text.find("{")
    if start < 0:
        return None
    end = text.find("}", start + 1)
    return text[start + 1 : end] if end > start + 1 else None


@dataclass(frozen=True, slots=True)
class RingNode:
    name: str
    weight: int = 1


class HashRing:
    """Maps keys to shard names; shares and moves can be computed without touching data."""

    def __init__(self, nodes: Iterable[RingNode], vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT) -> None:
        self.nodes = tuple(nodes)
        if not self.nodes:
            raise ValueError("a ring needs at least one node")
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("ring node names must be unique")
        if any(node.weight < 1 for node in self.nodes):
            raise ValueError("ring node weights must be >= 1")
        points: list[tuple[int, str]] = []
        for node in self.nodes:
            for index in range(node.weight * vnodes_per_weight):
                points.append((stable_hash(f"{node.name}#{index}".encode()), node.name))
        # Ties (astronomically rare) are broken by name so that the order is deterministic.
        points.sort()
        self._hashes = [point for point, _ in points]
        self._owners = [owner for _, owner in points]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def owner(self, key: str) -> str:
        """The shard that owns ``key``: the one placement function every router, copier, verifier
        and sweeper guard uses."""
        index = bisect.bisect_left(self._hashes, stable_hash(hash_tag(key).encode()))
        return self._owners[index % len(self._owners)]

    def arcs(self) -> list[tuple[int, int, str]]:
        """The ring as ``(start_exclusive, end_inclusive, owner)`` arcs covering the circle."""
        arcs = []
        previous = self._hashes[-1] - _RING_SIZE
        for point, owner in zip(self._hashes, self._owners, strict=True):
            arcs.append((previous, point, owner))
            previous = point
        return arcs

    def shares(self) -> Mapping[str, float]:
        """Fraction of the hash space each shard owns."""
        shares = dict.fromkeys((node.name for node in self.nodes), 0.0)
        for start, end, owner in self.arcs():
            shares[owner] += (end - start) / _RING_SIZE
        return shares
