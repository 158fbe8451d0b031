"""How far a replica is behind its primary, in the units its database measures."""

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ReplicationLag:
    """One look at a replica's replication state and its distance from the primary.

    PostgreSQL measures the distance in WAL bytes (``bytes_behind``), MariaDB in
    transactions counted from GTID sequence numbers (``transactions_behind``); the
    other one is None. ``seconds_behind`` is the database's own estimate
    (PostgreSQL ``replay_lag``, MariaDB ``Seconds_Behind_Master``), None when it has
    none. Positions are the primary's and the replica's own notation: LSNs or GTID lists.
    ``last_error`` is why replication stopped, where the database says (MariaDB).
    """

    state: str
    seconds_behind: float | None
    primary_position: str
    replica_position: str
    bytes_behind: int | None = None
    transactions_behind: int | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
