"""The ops of ``batch`` (``POST /v1/batch``) and ``txn`` (``POST /v1/txn``), and a txn's compares.

A batch is not atomic: each op is answered as its single-key request would be, in order, and one
that fails does not stop the others. A txn is: its compares choose a branch, whose ops all apply
or (one failing) none does, on keys of one shard.
"""

import base64
from dataclasses import dataclass
from typing import Any

from kvstore.client.protocol import Version, if_match, ttl_param


@dataclass(frozen=True, slots=True)
class Get:
    key: str

    def document(self) -> dict[str, Any]:
        return {"op": "get", "key": self.key}


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes | str
    ttl: float | str | None = None
    if_match: Version | None = None
    if_absent: bool = False

    def document(self) -> dict[str, Any]:
        if self.if_match is not None and self.if_absent:
            raise ValueError("if_match and if_absent exclude each other")
        value = self.value.encode() if isinstance(self.value, str) else self.value
        document: dict[str, Any] = {"op": "put", "key": self.key, "value_b64": base64.b64encode(value).decode()}
        if self.ttl is not None:
            document["ttl"] = ttl_param(self.ttl)
        if self.if_match is not None:
            document["if_match"] = if_match(self.if_match)
        if self.if_absent:
            document["if_none_match"] = "*"
        return document


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    if_match: Version | None = None

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"op": "delete", "key": self.key}
        if self.if_match is not None:
            document["if_match"] = if_match(self.if_match)
        return document


@dataclass(frozen=True, slots=True)
class Incr:
    key: str
    by: int = 1

    def document(self) -> dict[str, Any]:
        return {"op": "incr", "key": self.key, "by": self.by}


Op = Get | Put | Delete | Incr


def is_write(op: Op) -> bool:
    return not isinstance(op, Get)


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn's condition on one key: its live ``version`` is this, or it is ``absent``, or it ``exists``."""

    key: str
    version: int | None = None
    absent: bool = False
    exists: bool = False

    def document(self) -> dict[str, Any]:
        if (self.version is not None) + self.absent + self.exists != 1:
            raise ValueError(f"compare on {self.key!r}: give exactly one of version, absent, exists")
        if self.version is not None:
            return {"key": self.key, "version": self.version}
        return {"key": self.key, "absent" if self.absent else "exists": True}
