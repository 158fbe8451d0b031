"""Key -> shard through the ring record's topology; owns the shards' lifecycle.

The router starts from the config's ring and follows the ring record kept on the shards (see
``ring_record.py``): ``refresh`` reads it and adopts a newer epoch, opening shards it did not
know; the server's router refreshes every ``ring_poll_interval_s`` (``watch``).

A *fenced* router (the server's) makes every key statement carry the ring epoch it routed by
(``Node.routed_epoch``; a shard refuses another one, see ``backends/sql.py``), so routing by a
stale ring is never unsafe: the statement is refused and the store routes it again after a
refresh. For that epoch to be the one an operation was routed by, operations run inside
:meth:`Router.routing`, and adopting a new epoch waits until the operations routed by the old one
have ended (a refused statement ends its operation at once), and the statements they queued on
batching lanes too (those outlive an operation whose deadline passed).
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from kvstore import metrics, moving
from kvstore.config import Settings, ShardSettings, parse_shard_specs
from kvstore.errors import KvError
from kvstore.ring_record import Phase, RingRecord, ShardSpec, initial_record, poll_records, ring_layout
from kvstore.shard import Shard
from kvstore.topology import Topology

log = logging.getLogger("kvstore.router")
# A shard that does not answer (frozen, partitioned) holds a refresh up this long at most; a
# refresh that follows a refused statement waits for it.
_RECORD_READ_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Route:
    """The shards one key's operation touches (see ``topology.Placement``)."""

    owner: Shard
    fallback: Shard | None = None
    writes_paused_by: Phase | None = None


class Router:
    def __init__(self, settings: Settings, *, fenced: bool = False) -> None:
        self.settings = settings
        self.fenced = fenced
        self.shards = {shard.name: Shard.from_settings(shard, settings.server) for shard in settings.shards}
        self.record = initial_record(settings)  # the ring record routed by (epoch 0: none read yet)
        self.topology = Topology(epoch=0, phase=Phase.STABLE, ring=settings.ring())
        metrics.record_ring(0, Phase.STABLE, Phase)
        self._routing = 0  # operations in flight, routed by the current epoch
        self._drained = asyncio.Event()  # set while none is
        self._drained.set()
        self._open = asyncio.Event()  # cleared while a new epoch is adopted
        self._open.set()
        self._refreshing: asyncio.Task[list[Shard]] | None = None
        self._gate = _Routing(self)
        self._fence(self.shards.values())

    def routing(self) -> "_Routing":
        """Run one operation by the current epoch: it does not change until the operation ends.
        Never nested, and never around a refresh (adopting waits for the operations in flight)."""
        return self._gate

    async def refresh_once(self) -> None:
        """A refresh shared by every operation a shard refused at about the same time."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        await asyncio.shield(self._refreshing)

    def _fence(self, shards: Iterable[Shard]) -> None:
        if self.fenced:
            for shard in shards:
                shard.route_by(self.topology.epoch)

    def route(self, key: str) -> Route:
        placement = self.topology.place(key)
        fallback = None if placement.fallback is None else self.shards[placement.fallback]
        return Route(self.shards[placement.owner], fallback, placement.writes_paused_by)

    def may_purge(self, shard: str) -> Callable[[Sequence[str]], list[str]]:
        """The sweeper's guard for ``shard``: which of some dead rows' keys may be hard-deleted now
        (its deletes are fenced: by a stale ring, they are refused)."""

        def allowed(keys: Sequence[str]) -> list[str]:
            return moving.purgeable(self.topology, shard, keys)

        return allowed

    async def refresh(self) -> list[Shard]:
        """Read the ring record from every known shard and follow the newest epoch.

        Returns the shards it opened for the first time.
        """
        nodes = {name: shard.primary for name, shard in self.shards.items()}
        poll = await poll_records(nodes, min(self.settings.server.connect_timeout_s, _RECORD_READ_TIMEOUT_S))
        if poll.latest is None or poll.latest.epoch <= self.topology.epoch:
            return []
        return await self._adopt(poll.latest)

    async def watch(self, stop: asyncio.Event, on_added: Callable[[Shard], Awaitable[None]]) -> None:
        """Refresh every ``ring_poll_interval_s`` until ``stop``; hand shards opened since it started
        (by its refreshes or by those after a refused statement) to ``on_added``."""
        interval = self.settings.server.ring_poll_interval_s
        known = set(self.shards)
        while not stop.is_set():
            try:
                await self.refresh_once()
                for name in [name for name in self.shards if name not in known]:
                    known.add(name)
                    await on_added(self.shards[name])
            except KvError as error:
                log.warning("cannot follow the ring record: %s", error)
            except Exception:  # a bug must not end the watch: the ring would silently stop following the record
                log.exception("cannot follow the ring record")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _adopt(self, record: RingRecord) -> list[Shard]:
        added = []
        try:
            for name in record.shard_names():
                if name not in self.shards:
                    shard = Shard.from_settings(self._shard_settings(record, name), self.settings.server)
                    await shard.open()
                    self.shards[name] = shard
                    added.append(shard)
        except BaseException:
            for shard in added:
                del self.shards[shard.name]
                await shard.close(1.0)
            raise
        drift = config_drift(self.settings, record)
        if drift is not None:
            log.warning("%s", drift)
        self._open.clear()
        try:
            await self._drained.wait()
            await asyncio.gather(*(shard.lanes.quiet() for shard in self.shards.values()))
            self.record, self.topology = record, Topology.of(record)
            self._fence(self.shards.values())
        finally:
            self._open.set()
        metrics.record_ring(record.epoch, record.phase, Phase)
        log.info("ring record adopted", extra={"epoch": record.epoch, "phase": record.phase.value})
        return added

    def _shard_settings(self, record: RingRecord, name: str) -> ShardSettings:
        """Local settings where the config knows the shard (its DSNs win), else the record's spec."""
        for shard in self.settings.shards:
            if shard.name == name:
                return shard
        (shard,) = parse_shard_specs([record.spec(name)], os.environ, f"ring record epoch {record.epoch}")
        return shard

    async def init_schemas(self) -> dict[str, KvError | None]:
        """Open each shard's primary and create, upgrade or check its schema: the error per shard,
        or None. Shards the ring record names beyond the config are included."""
        outcomes = await _init_schemas(list(self.shards.values()))
        with contextlib.suppress(KvError):
            outcomes |= await _init_schemas(await self.refresh())
        return outcomes

    async def close(self, timeout_s: float) -> None:
        await asyncio.gather(*(shard.close(timeout_s) for shard in self.shards.values()))


class _Routing:
    """``Router.routing``: a plain class rather than a generator, as every request enters it."""

    __slots__ = ("router",)

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __aenter__(self) -> None:
        router = self.router
        if not router._open.is_set():
            await router._open.wait()
        router._routing += 1
        router._drained.clear()

    async def __aexit__(self, *_: object) -> None:
        router = self.router
        router._routing -= 1
        if not router._routing:
            router._drained.set()


def config_drift(settings: Settings, record: RingRecord) -> str | None:
    """What to tell an operator whose config describes neither ring of ``record`` (None if it does).

    Names and weights make a ring (DSNs may differ between front ends); during a migration the
    config may describe either ring.
    """
    configured = {shard.name: shard.weight for shard in settings.shards}
    rings = [ring_layout(record.shards)] + ([] if record.previous is None else [ring_layout(record.previous)])
    if configured in rings:
        return None
    return (
        f"{settings.source or 'the config'} describes a ring the shards no longer use; following their ring record"
        f" (epoch {record.epoch}): update it to shards {describe_ring(record.shards)}"
    )


def describe_ring(specs: Sequence[ShardSpec]) -> str:
    """``s0 (weight 1), s1 (weight 2)``: a ring as an operator writes it."""
    return ", ".join(f"{name} (weight {weight})" for name, weight in ring_layout(specs).items())


async def _init_schemas(shards: list[Shard]) -> dict[str, KvError | None]:
    outcomes: dict[str, KvError | None] = {}
    for shard in shards:
        try:
            await shard.open()
            await shard.primary.ensure_schema()
        except KvError as error:
            outcomes[shard.name] = error
        else:
            outcomes[shard.name] = None
    return outcomes
