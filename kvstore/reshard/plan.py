"""What a ring change moves, computed from the rings alone (pure, no I/O).

A key belongs to the arc that ends at the first ring point at or after its hash. Merging the
arc end points of both rings cuts the circle into segments on which neither ring changes owner,
so summing the segments whose owner differs gives the moved key space exactly::

    old   --s0--|------s1------|---s0---|
    new   --s0--|--s1--|--s2---|---s0---|
    moves               s1->s2

``sample_diff`` does the same by counting real (or random) keys, to check the figure against.
"""

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvstore.ring import HashRing

KEY_SPACE = 1 << 64  # the ring's 64-bit circle


@dataclass(frozen=True, slots=True)
class Move:
    """The part of the key space that changes owner from ``source`` to ``target``."""

    source: str
    target: str
    span: int  # hash values that move, out of KEY_SPACE

    @property
    def fraction(self) -> float:
        return self.span / KEY_SPACE


@dataclass(frozen=True)
class RingDiff:
    """Moves between two rings, largest first, and every shard's share before and after."""

    moves: tuple[Move, ...]
    shares_before: Mapping[str, float]
    shares_after: Mapping[str, float]

    @classmethod
    def between(cls, old: HashRing, new: HashRing) -> "RingDiff":
        old_ends, old_owners = _ends_and_owners(old)
        new_ends, new_owners = _ends_and_owners(new)
        spans: Counter[tuple[str, str]] = Counter()
        boundaries = sorted(set(old_ends) | set(new_ends))
        previous = boundaries[-1] - KEY_SPACE
        for end in boundaries:
            # (previous, end] holds no boundary of either ring: one owner in each.
            source = old_owners[bisect.bisect_left(old_ends, end) % len(old_ends)]
            target = new_owners[bisect.bisect_left(new_ends, end) % len(new_ends)]
            if source != target:
                spans[source, target] += end - previous
            previous = end
        moves = sorted((Move(source, target, span) for (source, target), span in spans.items()), key=_largest_first)
        return cls(tuple(moves), _shares(old), _shares(new))

    @property
    def moved_fraction(self) -> float:
        """The fraction of the key space whose owner changes."""
        return sum(move.span for move in self.moves) / KEY_SPACE

    @property
    def shards(self) -> tuple[str, ...]:
        """Every shard of either ring: the old ring's order, then the new ones."""
        return tuple(dict.fromkeys([*self.shares_before, *self.shares_after]))


@dataclass(frozen=True)
class KeySample:
    """How many of a set of keys change owner, per ``(source, target)`` pair."""

    keys: int
    moves: Mapping[tuple[str, str], int]

    @property
    def moved(self) -> int:
        return sum(self.moves.values())

    @property
    def moved_fraction(self) -> float:
        return self.moved / self.keys if self.keys else 0.0


def sample_diff(old: HashRing, new: HashRing, keys: Iterable[str]) -> KeySample:
    """Count the keys of ``keys`` whose owner differs between ``old`` and ``new``."""
    total = 0
    moves: Counter[tuple[str, str]] = Counter()
    for key in keys:
        total += 1
        source, target = old.owner(key), new.owner(key)
        if source != target:
            moves[source, target] += 1
    return KeySample(total, dict(moves))


def _ends_and_owners(ring: HashRing) -> tuple[list[int], list[str]]:
    arcs = ring.arcs()
    return [end for _, end, _ in arcs], [owner for _, _, owner in arcs]


def _shares(ring: HashRing) -> dict[str, float]:
    return dict(ring.shares())


def _largest_first(move: Move) -> tuple[int, str, str]:
    return (-move.span, move.source, move.target)
