"""PostgreSQL under Patroni: per shard 1 leader + 2 replicas in synchronous mode, over a local etcd.

Each member is a ``patroni`` process (Debian's package, on the system Python) that runs its own
PostgreSQL: the first member bootstraps the cluster with ``initdb``, the others clone it with
``pg_basebackup``; Patroni holds the leader lock in etcd and promotes a replica when the leader
stops renewing it. ``synchronous_mode`` makes the leader wait for one replica (the *sync standby*)
before a commit returns, and Patroni promotes only that replica, so no acknowledged write is lost
in a failover.

Timing is tuned for a local cluster (``PatroniTiming``): a dead leader's lock expires after
``ttl`` seconds and the replicas look every ``loop_wait``, so a failover takes about ``ttl`` plus a
loop and the promotion. Patroni requires ``loop_wait + 2 * retry_timeout <= ttl``.

Patroni writes no PID file and starts PostgreSQL in a session of its own (so PostgreSQL survives a
Patroni crash): a member stops both, Patroni first (it stops its PostgreSQL), then a postmaster
left without it.
"""

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvstore.cluster.access import grant_traverse
from kvstore.cluster.binaries import MissingBinaries, find_postgres_binaries
from kvstore.cluster.instance import APP_DATABASE, DatabaseInstance, InstanceError, http_ok_command
from kvstore.cluster.postgres import SUPERUSER, PostgresInstance

PATRONI = Path("/usr/bin/patroni")
PATRONICTL = Path("/usr/bin/patronictl")
_HTTP_TIMEOUT_S = 2.0
_TRUST_LOCAL = [
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "local replication all trust",
    "host replication all 127.0.0.1/32 trust",
]


def find_patroni() -> Path:
    if not (PATRONI.is_file() and PATRONICTL.is_file()):
        raise MissingBinaries(f"{PATRONI} not found. Install it, e.g. `apt-get install patroni etcd-server`.")
    return PATRONI


@dataclass(frozen=True)
class PatroniTiming:
    """Patroni's leader-lock timing (seconds): defaults 30 / 10 / 10, here tuned for a local cluster."""

    ttl: int = 8
    loop_wait: int = 1
    retry_timeout: int = 3

    def __post_init__(self) -> None:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(f"Patroni needs loop_wait + 2 * retry_timeout <= ttl, got {self}")


LOCAL_TIMING = PatroniTiming()


class PatroniMember(DatabaseInstance):
    """One member of a Patroni cluster (scope): ``data_dir`` holds patroni.yml, its log and ``pgdata/``.

    ``port`` is PostgreSQL's, ``api_port`` Patroni's REST API.
    """

    backend = "postgres"
    _temp_prefix = "kvstore-patroni-"
    _writes_pid_file = False

    def __init__(
        self,
        data_dir: Path | str,
        port: int,
        *,
        api_port: int,
        scope: str,
        name: str,
        etcd_url: str,
        durable: bool = True,
        owned_dir: Path | str | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.api_port = api_port
        self.scope = scope
        self.name = name
        self.etcd_url = etcd_url
        self.durable = durable
        # The PostgreSQL server Patroni runs: for SQL through its socket, and to kill or stop its postmaster.
        self.postgres = PostgresInstance(self.data_dir / "pgdata", port, durable=durable, owned_dir=owned_dir)

    @property
    def config_path(self) -> Path:
        return self.data_dir / "patroni.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "patroni.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "patroni.pid"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def is_initialized(self) -> bool:
        return self.config_path.is_file()

    def dsn(self, database: str = APP_DATABASE) -> str:
        return self.postgres.dsn(database)

    def _initialize(self) -> None:
        """Write patroni.yml; Patroni itself creates the data (initdb on the first member, a clone on the others)."""
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        user = self.postgres._os_user()
        if user is not None:  # Patroni runs as the postgres OS user: it writes here
            grant_traverse(self.postgres.owned_dir, self.data_dir, user)
            for path in (self.data_dir, self.config_path):
                os.chown(path, user.uid, user.gid)

    def config(self) -> dict[str, Any]:
        """patroni.yml: this member's addresses, the etcd, and the cluster-wide settings it bootstraps with."""
        pgdata = self.postgres.data_dir
        durability = "on" if self.durable else "off"
        return {
            "scope": self.scope,
            "namespace": "/kvstore/",
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{self.api_port}", "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"host": self.etcd_url.removeprefix("http://")},
            "bootstrap": {
                "dcs": {
                    "ttl": LOCAL_TIMING.ttl,
                    "loop_wait": LOCAL_TIMING.loop_wait,
                    "retry_timeout": LOCAL_TIMING.retry_timeout,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "max_connections": 200,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_level": "replica",
                            "wal_log_hints": "on",  # pg_rewind: the old leader rejoins as a replica
                            "wal_keep_size": "256MB",
                            "hot_standby": "on",
                            # Commits wait for the sync standby whatever durable says: that is what
                            # makes a failover lose no acknowledged write. durable=False only skips fsync.
                            "synchronous_commit": "on",
                            "fsync": durability,
                            "full_page_writes": durability,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
                "pg_hba": _TRUST_LOCAL,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(pgdata),
                "bin_dir": str(find_postgres_binaries().bindir),
                "pgpass": str(self.data_dir / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER},
                    "replication": {"username": SUPERUSER},
                    "rewind": {"username": SUPERUSER},
                },
                "parameters": {
                    "unix_socket_directories": str(pgdata),
                    "logging_collector": "on",
                    "log_directory": str(self.data_dir),
                    "log_filename": "postgres.log",
                },
                "pg_hba": _TRUST_LOCAL,
                "basebackup": [{"checkpoint": "fast"}],
            },
        }

    def _server_command(self) -> list[str]:
        return [str(find_patroni()), str(self.config_path)]

    def _spawn_options(self) -> dict[str, Any]:
        return self.postgres._spawn_options()

    def _ping_command(self) -> list[str]:
        return http_ok_command(f"{self.api_url}/health")  # 200 once its PostgreSQL runs, in any role

    def _sql_command(self, statement: str) -> list[str]:
        return self.postgres._sql_command(statement)

    def _bootstrap(self) -> None:
        """Nothing here: the kvstore role and database are created once, on the leader (``create_app_user``)."""

    def _is_our_server(self, pid: int) -> bool:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        return str(self.config_path) in args

    def stop(self, timeout_s: float = 15) -> None:
        """Stop Patroni (which stops its PostgreSQL), then a postmaster Patroni left behind (it was killed)."""
        super().stop(timeout_s)
        self.postgres.stop(timeout_s)

    def kill(self) -> None:
        """The member's machine dies: SIGKILL Patroni and its PostgreSQL at once."""
        super().kill()
        self.postgres.kill()

    # -- what Patroni says ---------------------------------------------------------

    def cluster_state(self) -> dict[str, Any]:
        """Patroni's ``GET /cluster``: every member with its role (leader, sync_standby, replica), state, lag."""
        state: dict[str, Any] = _get_json(f"{self.api_url}/cluster")
        return state

    def member_state(self) -> dict[str, Any]:
        """Patroni's ``GET /patroni``: this member's role and PostgreSQL state."""
        state: dict[str, Any] = _get_json(f"{self.api_url}/patroni")
        return state


def create_app_user(leader: PatroniMember) -> None:
    """The ``kvstore`` login and database on the leader (replicas get them replicated)."""
    leader.postgres._bootstrap()


def switchover(member: PatroniMember, leader: str, candidate: str) -> None:
    """A planned switchover with ``patronictl``, as an operator would run it."""
    member._run(
        [
            str(PATRONICTL),
            "-c",
            str(member.config_path),
            "switchover",
            member.scope,
            f"--leader={leader}",
            f"--candidate={candidate}",
            "--force",
        ],
        timeout_s=60,
    )


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # Patroni answers 503 with the same JSON body
        return json.load(error)
    except (OSError, ValueError) as error:
        raise InstanceError(f"{url}: {error}") from None
