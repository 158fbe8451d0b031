"""The host list of a DSN: ``scheme://user:password@host1:port1,host2:port2/database?options``.

A shard whose database runs under an HA manager names every node of it (PostgreSQL's libpq
syntax, which asyncpg follows; for Galera the nodes in the order writes should prefer). Python's
``urlsplit`` reads such a location as one host with a port after the last colon, so the hosts
are split here.
"""

from urllib.parse import unquote, urlsplit


def dsn_hosts(dsn: str) -> list[tuple[str, int | None]]:
    """``(host, port or None)`` for each host the DSN names, in order; ValueError for a bad port."""
    location = urlsplit(dsn).netloc.rpartition("@")[2]
    hosts = []
    for item in location.split(","):
        host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not colon:
            host, port = item, ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} out of range 1-65535")
        hosts.append((unquote(host.strip("[]")), int(port) if port else None))
    return hosts
