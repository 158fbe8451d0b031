"""Resharding: what a ring change moves (``plan``), computed before any data is touched."""

from kvstore.reshard.plan import KeySample, Move, RingDiff, sample_diff

__all__ = ["KeySample", "Move", "RingDiff", "sample_diff"]
