"""Locate the PostgreSQL and MariaDB server binaries installed on this machine.

Lookups are cached: they shell out (``pg_config``) and their answer does not change
while a test session or benchmark runs.
"""

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_PG_TOOLS = ("initdb", "postgres", "psql", "pg_basebackup")
_PG_VERSIONED_ROOT = Path("/usr/lib/postgresql")
# mariadbd lives in /usr/sbin on Debian, which is often not on a non-root PATH.
_MARIADB_FALLBACK_DIRS = (Path("/usr/sbin"), Path("/usr/bin"))


class MissingBinaries(RuntimeError):
    """The database server binaries needed to start an instance are not installed."""


@dataclass(frozen=True)
class PostgresBinaries:
    """Paths of the PostgreSQL programs the harness runs."""

    bindir: Path
    initdb: Path
    postgres: Path
    psql: Path
    pg_basebackup: Path


@dataclass(frozen=True)
class MariaDBBinaries:
    """Paths of the MariaDB programs the harness runs."""

    mariadbd: Path
    install_db: Path
    client: Path
    admin: Path


@functools.cache
def find_postgres_binaries() -> PostgresBinaries:
    """Find a PostgreSQL bindir holding ``initdb``, ``postgres``, ``psql`` and ``pg_basebackup``.

    ``pg_config --bindir`` wins when it points at a server installation; Debian's
    ``pg_config`` may come from libpq-dev alone, so fall back to the newest
    ``/usr/lib/postgresql/<version>/bin``.
    """
    candidates = [d for d in (_pg_config_bindir(), _newest_debian_bindir()) if d is not None]
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in _PG_TOOLS):
            return PostgresBinaries(bindir, *(bindir / tool for tool in _PG_TOOLS))
    looked = ", ".join(str(d) for d in candidates) or "no pg_config, no /usr/lib/postgresql/*/bin"
    raise MissingBinaries(
        f"PostgreSQL server binaries not found (need {', '.join(_PG_TOOLS)}; looked in: "
        f"{looked}). Install them, e.g. `apt-get install postgresql`."
    )


@functools.cache
def find_mariadb_binaries() -> MariaDBBinaries:
    """Find ``mariadbd``, ``mariadb-install-db``, ``mariadb`` and ``mariadb-admin``."""
    names = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin")
    found = {name: _which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise MissingBinaries(
            f"MariaDB binaries not found: {', '.join(missing)} (searched PATH and "
            f"{', '.join(map(str, _MARIADB_FALLBACK_DIRS))}). Install them, e.g. "
            "`apt-get install mariadb-server-core mariadb-client`."
        )
    paths = [path for path in found.values() if path is not None]
    return MariaDBBinaries(*paths)


def _pg_config_bindir() -> Path | None:
    """Ask ``pg_config`` for its bindir; None when it is absent or fails."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(result.stdout.strip())


def _newest_debian_bindir() -> Path | None:
    """Return the highest-versioned ``/usr/lib/postgresql/<version>/bin``, if any."""
    versioned = [d for d in _PG_VERSIONED_ROOT.glob("*/bin") if re.fullmatch(r"\d+(\.\d+)*", d.parent.name)]
    if not versioned:
        return None
    return max(versioned, key=lambda d: tuple(int(part) for part in d.parent.name.split(".")))


def _which(name: str) -> Path | None:
    """Find ``name`` on PATH, then in the directories Debian installs MariaDB into."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    for directory in _MARIADB_FALLBACK_DIRS:
        if (directory / name).is_file():
            return directory / name
    return None
