"""shards.yaml -> typed, validated settings.

Precedence: defaults < file (``--config`` / ``KVSTORE_CONFIG``) < ``KVSTORE_*`` environment
< command-line flags. Every error names the path of the offending field, e.g.
``shards[2].primary: bad DSN``. String values may use ``${ENV_VAR}`` (or
``${ENV_VAR:-default}``) so that secrets stay out of the file; DSNs never appear in reprs.
"""

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import yaml

from kvstore.backends.dsn import dsn_hosts
from kvstore.backends.registry import ENGINES, Engine
from kvstore.errors import ConfigError
from kvstore.ring import DEFAULT_VNODES_PER_WEIGHT, HashRing, RingNode

T = TypeVar("T")
log = logging.getLogger("kvstore.config")
CONFIG_ENV = "KVSTORE_CONFIG"
DEFAULT_CONFIG_PATH = Path("shards.yaml")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Front-end options; each can also be set as ``KVSTORE_<NAME>`` in the environment."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    request_timeout_s: float = 5.0
    max_value_bytes: int = 1024 * 1024
    connect_timeout_s: float = 2.0
    pool_min_size: int = 1
    pool_max_size: int = 16
    graceful_shutdown_s: float = 10.0
    startup_timeout_s: float = 10.0
    retry_after_s: int = 1
    max_in_flight: int = 256
    max_replica_lag_s: float = 5.0
    replica_probe_interval_s: float = 0.5
    replica_selection: str = "least_outstanding"  # or "round_robin"; benchmarks/replica_selection.py
    # How often a front end re-reads the ring record from its shards. Routing by a stale ring is
    # never unsafe (shards refuse it: fenced statements); polling only keeps refusals rare.
    ring_poll_interval_s: float = 0.25
    # Natural batching (see batching.py): concurrent requests for one database node share one
    # statement, at most ``batch_max_keys`` keys each. Off, every request is its own statement.
    batching: bool = True
    batch_max_keys: int = 128
    access_log: bool = False
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class SweeperSettings:
    """The expiry sweeper (see ``sweeper.py``); each can also be set as ``KVSTORE_SWEEPER_<NAME>``."""

    enabled: bool = True
    keys_per_sample: int = 20
    stale_threshold: float = 0.25
    cycle_budget_ms: float = 10.0  # of each tick: the worker's event loop stays >= 90 % for requests
    tick_ms: float = 100.0


SCOPES = ("read", "write", "admin")  # each includes the ones before it


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A bearer token, kept only as its SHA-256 digest so that no secret stays in memory or reprs."""

    name: str
    sha256: bytes = field(repr=False)
    scope: str


@dataclass(frozen=True, slots=True)
class ShardSettings:
    name: str
    backend: str
    primary: str = field(repr=False)
    replicas: tuple[str, ...] = field(default=(), repr=False)
    weight: int = 1
    pool_min_size: int | None = None
    pool_max_size: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    shards: tuple[ShardSettings, ...]
    sweeper: SweeperSettings = SweeperSettings()
    tokens: tuple[ApiToken, ...] = ()
    vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT
    source: Path | None = None
    # The shard list as written (``${ENV}`` unexpanded, SQLite paths made absolute): what the
    # ring record carries to front ends that do not know a shard yet.
    shard_specs: tuple[Mapping[str, Any], ...] = ()

    def ring(self) -> HashRing:
        return HashRing((RingNode(shard.name, shard.weight) for shard in self.shards), self.vnodes_per_weight)

    def with_server(self, **overrides: Any) -> "Settings":
        """Apply command-line flags (``None`` means "not given") on top of file and env."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return replace(self, server=replace(self.server, **given))


def config_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path((os.environ if environ is None else environ).get(CONFIG_ENV, DEFAULT_CONFIG_PATH))


def load_settings(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a config file."""
    environ = os.environ if environ is None else environ
    file = config_path(path, environ)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{file}: cannot read config: {error.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    return parse_settings(document, environ, base_dir=file.parent, source=file)


def parse_settings(document: Any, environ: Mapping[str, str], base_dir: Path, source: Path | None = None) -> Settings:
    raw_shards = document.get("shards") if isinstance(document, dict) else None
    document = _interpolate(document, environ, "")
    root = _mapping(document, "config")
    _reject_unknown(root, {"server", "shards", "ring", "sweeper", "auth"}, "")
    server = _section(
        ServerSettings, _retire(_mapping(root.get("server", {}), "server")), environ, "server", "KVSTORE_"
    )
    _check_server(server)
    sweeper = _section(
        SweeperSettings, _mapping(root.get("sweeper", {}), "sweeper"), environ, "sweeper", "KVSTORE_SWEEPER_"
    )
    _check_sweeper(sweeper)
    ring = _mapping(root.get("ring", {}), "ring")
    _reject_unknown(ring, {"vnodes_per_weight"}, "ring.")
    vnodes = _integer(ring.get("vnodes_per_weight", DEFAULT_VNODES_PER_WEIGHT), "ring.vnodes_per_weight", 1)
    shards = _shard_list(root.get("shards"), base_dir)
    specs = _portable_specs(raw_shards, shards)
    tokens = _tokens(_mapping(root.get("auth", {}), "auth"))
    return Settings(
        server=server,
        shards=shards,
        sweeper=sweeper,
        tokens=tokens,
        vnodes_per_weight=vnodes,
        source=source,
        shard_specs=specs,
    )


def write_shards(path: Path, specs: Sequence[Mapping[str, Any]]) -> None:
    """Replace the shards list of the config file at ``path`` with ``specs``, keeping its other settings.

    A shard the file already lists (same name and backend) keeps its entry as written, local DSNs
    and ``${ENV}`` references included, with the new weight; the others are written as ``specs``
    (a ring record's) carry them. YAML comments are not kept. The file is replaced atomically and
    keeps its permissions (it may hold secrets).
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot rewrite the config: {error}") from None
    listed = {item.get("name"): item for item in document.get("shards") or [] if isinstance(item, dict)}
    shards = []
    for spec in specs:
        mine = listed.get(spec["name"])
        if mine is None or mine.get("backend") != spec["backend"]:
            shards.append(dict(spec))
        elif mine.get("weight", 1) != spec.get("weight", 1):
            shards.append({**mine, "weight": spec.get("weight", 1)})
        else:
            shards.append(mine)
    document["shards"] = shards
    staging = path.with_name(f".{path.name}.new")
    try:
        staging.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        shutil.copymode(path, staging)
        staging.replace(path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot rewrite the config: {error.strerror}") from None


def parse_shard_specs(specs: Any, environ: Mapping[str, str], origin: str) -> tuple[ShardSettings, ...]:
    """Shard settings from specs as a ring record carries them (see ``Settings.shard_specs``)."""
    try:
        return _shard_list(_interpolate(list(specs), environ, ""), Path("/"))
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None


def _portable_specs(raw: Any, shards: tuple[ShardSettings, ...]) -> tuple[Mapping[str, Any], ...]:
    """The validated shards with their locations as written: ``${ENV}`` references in DSNs stay
    unexpanded (a secret in the environment never travels), SQLite paths are made absolute."""
    specs = []
    for item, shard in zip(raw, shards, strict=True):
        spec: dict[str, Any] = {"name": shard.name, "backend": shard.backend, "weight": shard.weight}
        spec["primary"] = shard.primary if ENGINES[shard.backend].embedded else item["primary"]
        if shard.replicas:
            spec["replicas"] = list(item["replicas"])
        for pool in ("pool_min_size", "pool_max_size"):
            if getattr(shard, pool) is not None:
                spec[pool] = getattr(shard, pool)
        specs.append(spec)
    return tuple(specs)


def _tokens(auth: Mapping[str, Any]) -> tuple[ApiToken, ...]:
    _reject_unknown(auth, {"tokens"}, "auth.")
    raw = auth.get("tokens") or []
    if not isinstance(raw, list):
        raise ConfigError("auth.tokens: must be a list")
    tokens = tuple(_token(item, f"auth.tokens[{index}]") for index, item in enumerate(raw))
    names = [token.name for token in tokens]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"auth.tokens[{index}].name: duplicate token name {name!r}")
    return tokens


def _token(raw: Any, path: str) -> ApiToken:
    item = _mapping(raw, path)
    _reject_unknown(item, {"name", "token", "token_sha256", "scope"}, f"{path}.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}.name: required")
    if item.get("scope") not in SCOPES:
        raise ConfigError(f"{path}.scope: must be one of {', '.join(SCOPES)}")
    if ("token" in item) == ("token_sha256" in item):
        raise ConfigError(f"{path}: give exactly one of token (e.g. ${{ENV_VAR}}) or token_sha256")
    if "token" in item:
        secret = item["token"]
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"{path}.token: must be at least 16 characters")
        digest = hashlib.sha256(secret.encode()).digest()
    else:
        hex_digest = item["token_sha256"]
        if not isinstance(hex_digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hex_digest):
            raise ConfigError(f"{path}.token_sha256: must be 64 hexadecimal digits")
        digest = bytes.fromhex(hex_digest)
    return ApiToken(name=name, sha256=digest, scope=item["scope"])


def _interpolate(value: Any, environ: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [_interpolate(item, environ, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _interpolate(item, environ, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
    return value


# Settings a newer kvstore no longer needs: accepted with a warning, so that an upgrade keeps a config valid.
_RETIRED_SERVER_SETTINGS = {"ring_lease_s": "shards refuse a front end that routes by a stale ring (fenced statements)"}


def _retire(server: Mapping[str, Any]) -> Mapping[str, Any]:
    for name in server.keys() & _RETIRED_SERVER_SETTINGS.keys():
        log.warning("server.%s is no longer used (%s); remove it from the config", name, _RETIRED_SERVER_SETTINGS[name])
    return {name: value for name, value in server.items() if name not in _RETIRED_SERVER_SETTINGS}


def _section(kind: type[T], raw: Mapping[str, Any], environ: Mapping[str, str], path: str, env_prefix: str) -> T:
    """A flat settings section from the file, overridden by ``<env_prefix><NAME>`` variables."""
    known = {f.name: f for f in fields(kind)}  # type: ignore[arg-type]
    _reject_unknown(raw, set(known), f"{path}.")
    values: dict[str, Any] = dict(raw)
    for name in known:
        env_name = f"{env_prefix}{name.upper()}"
        if env_name in environ:
            values[name] = environ[env_name]
    parsed = {name: _coerce(value, type(known[name].default), f"{path}.{name}") for name, value in values.items()}
    return kind(**parsed)


def _check_sweeper(sweeper: SweeperSettings) -> None:
    for name in ("keys_per_sample", "cycle_budget_ms", "tick_ms"):
        if getattr(sweeper, name) <= 0:
            raise ConfigError(f"sweeper.{name}: must be greater than 0")
    if not 0 < sweeper.stale_threshold < 1:
        raise ConfigError("sweeper.stale_threshold: must be between 0 and 1 (exclusive)")
    if sweeper.cycle_budget_ms > sweeper.tick_ms:
        raise ConfigError("sweeper.cycle_budget_ms: must not exceed sweeper.tick_ms")


def _check_server(server: ServerSettings) -> None:
    positive = (
        "request_timeout_s",
        "max_value_bytes",
        "connect_timeout_s",
        "max_in_flight",
        "pool_max_size",
        "workers",
        "ring_poll_interval_s",
        "batch_max_keys",
    )
    for name in positive:
        if getattr(server, name) <= 0:
            raise ConfigError(f"server.{name}: must be greater than 0")
    if not 0 <= server.port <= 65535:
        raise ConfigError("server.port: must be between 0 and 65535")
    if server.pool_min_size < 0 or server.pool_min_size > server.pool_max_size:
        raise ConfigError("server.pool_min_size: must be between 0 and server.pool_max_size")
    if server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("server.log_level: must be one of debug, info, warning, error")
    if server.replica_selection not in ("round_robin", "least_outstanding"):
        raise ConfigError(
            f"server.replica_selection: must be round_robin or least_outstanding, got {server.replica_selection!r}"
        )


def _shard_list(raw: Any, base_dir: Path) -> tuple[ShardSettings, ...]:
    if raw is None:
        raise ConfigError("shards: no shards configured")
    if not isinstance(raw, list):
        raise ConfigError("shards: must be a list")
    if not raw:
        raise ConfigError("shards: no shards configured")
    shards = tuple(_shard(item, f"shards[{index}]", base_dir) for index, item in enumerate(raw))
    seen: dict[str, int] = {}
    for index, shard in enumerate(shards):
        if shard.name in seen:
            raise ConfigError(
                f"shards[{index}].name: duplicate shard name {shard.name!r} (also shards[{seen[shard.name]}])"
            )
        seen[shard.name] = index
    return shards


def _shard(raw: Any, path: str, base_dir: Path) -> ShardSettings:
    item = _mapping(raw, path)
    allowed = {"name", "backend", "primary", "replicas", "weight", "pool_min_size", "pool_max_size"}
    _reject_unknown(item, allowed, f"{path}.")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"{path}.name: must be 1-64 characters of letters, digits, '_', '.', '-'")
    backend = item.get("backend")
    engine = ENGINES.get(backend) if isinstance(backend, str) else None
    if engine is None:
        raise ConfigError(f"{path}.backend: unknown backend {backend!r}; expected one of {', '.join(ENGINES)}")
    primary = _location(item.get("primary"), engine, f"{path}.primary", base_dir)
    replicas_raw = item.get("replicas") or []
    if not isinstance(replicas_raw, list):
        raise ConfigError(f"{path}.replicas: must be a list")
    if not engine.replicas and replicas_raw:
        raise ConfigError(f"{path}.replicas: {engine.name} shards have no replicas")
    replicas = tuple(
        _location(replica, engine, f"{path}.replicas[{index}]", base_dir) for index, replica in enumerate(replicas_raw)
    )
    weight = _integer(item.get("weight", 1), f"{path}.weight", 1)
    pool_min = item.get("pool_min_size")
    pool_max = item.get("pool_max_size")
    return ShardSettings(
        name=name,
        backend=engine.name,
        primary=primary,
        replicas=replicas,
        weight=weight,
        pool_min_size=None if pool_min is None else _integer(pool_min, f"{path}.pool_min_size", 0),
        pool_max_size=None if pool_max is None else _integer(pool_max, f"{path}.pool_max_size", 1),
    )


def _location(raw: Any, engine: Engine, path: str, base_dir: Path) -> str:
    """An embedded engine's file path (made absolute against the config's folder) or a checked DSN."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{path}: missing; expected {'a file path' if engine.embedded else 'a DSN'}")
    if engine.embedded:
        if raw == ":memory:" or raw.startswith("file:"):
            raise ConfigError(f"{path}: {engine.name} shards need a plain file path (shared by workers)")
        return str((base_dir / raw).resolve())
    try:
        parts = urlsplit(raw)
        hosts = dsn_hosts(raw)
    except ValueError as error:
        raise ConfigError(f"{path}: bad DSN: {error}") from None
    if parts.scheme not in engine.dsn_schemes:
        expected = " or ".join(f"{scheme}://" for scheme in engine.dsn_schemes)
        raise ConfigError(f"{path}: bad DSN: a {engine.name} DSN starts with {expected}")
    if not all(host for host, _ in hosts):
        raise ConfigError(f"{path}: bad DSN: no host")
    if engine.dsn_needs_database and not parts.path.strip("/"):
        raise ConfigError(f"{path}: bad DSN: no database name ({engine.dsn_schemes[0]}://user:password@host:port/db)")
    options = dict(parse_qsl(parts.query))
    for option, allowed in engine.dsn_options.items():
        if options.get(option, allowed[0]) not in allowed:
            raise ConfigError(f"{path}: bad DSN: {option} must be {', '.join(allowed[:-1])} or {allowed[-1]}")
    return raw


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a mapping")
    return value


def _reject_unknown(item: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown setting; expected one of {', '.join(sorted(allowed))}")


def _integer(value: Any, path: str, minimum: int) -> int:
    number = _coerce(value, int, path)
    if number < minimum:
        raise ConfigError(f"{path}: must be at least {minimum}")
    return int(number)


def _coerce(value: Any, kind: type, path: str) -> Any:
    """Coerce YAML or environment text to ``kind``, refusing anything ambiguous."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a {kind.__name__}, got {value!r}")
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: expected a {kind.__name__}, got {value!r}") from None
