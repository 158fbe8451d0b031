"""``kvstore reshard …`` and ``kvstore verify``: move a running system from one ring to another.

The steps are in ``reshard/migration.py`` (with why the sequence loses no write); this module
opens the shards, runs a step, and reports it as text or JSON.
"""

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from typing import Any, TypeVar

import click

from kvstore.cli.fleet import Fleet, open_fleet
from kvstore.cli.options import config_option, settings_or_exit, table
from kvstore.cli.ring import show_diff
from kvstore.config import Settings, write_shards
from kvstore.errors import ConfigError, KvError, ReshardError, ShardError
from kvstore.reshard import migration
from kvstore.reshard.migration import DEFAULT_BATCH, CopyPace, CopyProgress
from kvstore.reshard.plan import RingDiff
from kvstore.reshard.verify import VerifyReport, verify
from kvstore.ring_record import Phase, RingRecord, ring_layout
from kvstore.router import describe_ring

T = TypeVar("T")

_to_option = click.option(
    "--to",
    "target_config",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    metavar="NEW.yaml",
    help="Config file whose shards list is the ring to move to.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
_pace_option = click.option(
    "--rows-per-second",
    type=click.FloatRange(min=1),
    default=None,
    help="Copy at most this many rows per second, to spare busy primaries (default: no limit).",
)
_write_config_option = click.option(
    "--write-config",
    is_flag=True,
    help="Then write the new ring's shards into the --config file, keeping its other settings.",
)
_batch_option = click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=DEFAULT_BATCH, show_default=True, help="Rows per batch."
)


def _run(step: Callable[[], Awaitable[T]]) -> T:
    """Run a step; a kvstore error becomes one line on stderr and exit status 1."""
    try:
        return asyncio.run(step())  # type: ignore[arg-type]
    except ShardError as error:
        raise click.ClickException(f"shard {error.shard} unreachable or failing: {error.detail}") from None
    except KvError as error:
        raise click.ClickException(str(error)) from None


@click.group()
def reshard() -> None:
    """Move a running system to another ring online: add, remove or reweight shards, or change engines.

    \b
    The steps, in order (`run` does them all):
      plan      what moves where (changes nothing)
      start     record the migration where every front end sees it
      copy      copy moving rows to their new owners (resumable)
      cutover   make the new ring the only ring (after a clean verify)
      cleanup   delete moved rows from their old owners
    `status` shows where a migration stands; `abort` returns to the old ring before cutover.

    \b
    Example:
      kvstore reshard run --config shards.yaml --to shards-3.yaml
    """


@reshard.command("plan")
@config_option
@_to_option
@_json_option
def plan(config_file: str | None, target_config: str, as_json: bool) -> None:
    """What moves when the current ring becomes NEW.yaml's (reads the ring record; changes nothing).

    \b
    Example:
      kvstore reshard plan --config shards.yaml --to shards-3.yaml
    """
    settings, target = settings_or_exit(config_file), settings_or_exit(target_config)

    async def step() -> RingRecord:
        async with open_fleet(settings) as fleet:
            return fleet.record

    current = _run(step)
    show_diff(
        f"current ring (epoch {current.epoch})",
        target_config,
        RingDiff.between(current.ring(), target.ring()),
        None,
        as_json,
    )


@reshard.command("start")
@config_option
@_to_option
@_json_option
def start(config_file: str | None, target_config: str, as_json: bool) -> None:
    """Record the migration to NEW.yaml's ring on every shard; front ends follow it within a second.

    Creates the schema on new shards. From then on writes to moving keys go to their new owners,
    with no pause: a front end that still routes by the old ring is refused by the shards (fenced
    statements) and routes again by the new one. Then `copy` may begin. Run it again if interrupted.

    \b
    Example:
      kvstore reshard start --config shards.yaml --to shards-3.yaml
    """
    settings, target = settings_or_exit(config_file), settings_or_exit(target_config)

    async def step() -> RingRecord:
        async with open_fleet(settings, target) as fleet:
            return await migration.start(fleet.shards, settings, target, lambda message: _say(as_json, message))

    record = _run(step)
    _report(as_json, _record_document(record), "every front end now writes moving keys to their new owners")


@reshard.command("copy")
@config_option
@_batch_option
@_pace_option
@_json_option
def copy(config_file: str | None, batch_size: int, rows_per_second: float | None, as_json: bool) -> None:
    """Copy the rows whose owner changes to their new owners, in batches; run it again after a crash.

    Never overwrites a row the new owner already has (it is newer). Shows rows/s and an ETA.

    \b
    Example:
      kvstore reshard copy --config shards.yaml --batch-size 1000
    """
    settings = settings_or_exit(config_file)

    async def step() -> list[migration.SourceStatus]:
        async with open_fleet(settings) as fleet:
            await _copy_with_progress(fleet, CopyPace(batch_size, rows_per_second), show=not as_json)
            return await migration.copy_status(fleet.shards, fleet.record)

    statuses = _run(step)
    copied = sum(status.copied for status in statuses)
    _report(as_json, {"sources": [asdict(s) for s in statuses]}, f"copy complete: {copied:,} rows copied")


async def _copy_with_progress(fleet: Fleet, pace: CopyPace, show: bool) -> None:
    statuses = await migration.copy_status(fleet.shards, fleet.record)
    total = sum(s.rows_estimate or 0 for s in statuses)
    done = sum(s.scanned for s in statuses)
    with _progress(show, max(total, done, 1), "copying", done) as advance:
        await migration.copy(fleet.shards, fleet.record, pace, advance)


@contextmanager
def _progress(show: bool, length: int, label: str, done: int = 0) -> Iterator[CopyProgress]:
    """A progress bar (rows scanned; rate and ETA) on stderr, or nothing for --json."""
    if not show:
        yield lambda source, scanned, changed: None
        return
    started, rows = time.monotonic(), 0

    def rate(_: str | None) -> str:
        return f"{rows / max(time.monotonic() - started, 1e-3):,.0f} rows/s"

    with click.progressbar(
        length=length,
        label=label,
        show_eta=True,
        show_pos=True,
        item_show_func=rate,
        file=sys.stderr,
    ) as bar:
        bar.update(done)

        def advance(source: str, scanned: int, changed: int) -> None:
            nonlocal rows
            rows += scanned
            bar.update(scanned, current_item=source)

        yield advance


@reshard.command("cutover")
@config_option
@_batch_option
@_write_config_option
@_json_option
def cutover(config_file: str | None, batch_size: int, write_config: bool, as_json: bool) -> None:
    """Make the new ring the only ring, once the copy is complete and `verify` is clean.

    The config file still describes the old ring afterwards: --write-config puts the new
    shards list in it, else a warning says so.

    \b
    Example:
      kvstore reshard cutover --config shards.yaml --write-config
    """
    settings = settings_or_exit(config_file)

    async def step() -> RingRecord:
        async with open_fleet(settings) as fleet:
            await migration.check_cutover(fleet.shards, fleet.record)
            report = await verify(fleet.shards, fleet.record, batch_size)
            if not report.clean:
                _show_verify(report, as_json)
            return await migration.cutover(fleet.shards, fleet.record, report.clean)

    record = _run(step)
    _report(as_json, _record_document(record), "cut over: the new ring is the only ring; run `kvstore reshard cleanup`")
    _follow_in_config(settings, record, write_config, as_json)


@reshard.command("cleanup")
@config_option
@_batch_option
@_write_config_option
@_json_option
def cleanup(config_file: str | None, batch_size: int, write_config: bool, as_json: bool) -> None:
    """Delete moved rows from their old owners in batches, then end the migration.

    --write-config then puts the new shards list in the --config file (as for cutover).

    \b
    Example:
      kvstore reshard cleanup --config shards.yaml
    """
    settings = settings_or_exit(config_file)

    async def step() -> RingRecord:
        async with open_fleet(settings) as fleet:
            with _progress(not as_json, await _rows_on(fleet, previous=True), "cleaning up") as advance:
                return await migration.cleanup(fleet.shards, fleet.record, batch_size, advance)

    record = _run(step)
    _report(as_json, _record_document(record), f"migration finished: ring epoch {record.epoch} is stable")
    _follow_in_config(settings, record, write_config, as_json)


@reshard.command("abort")
@config_option
@_batch_option
@_json_option
def abort(config_file: str | None, batch_size: int, as_json: bool) -> None:
    """Before cutover: return to the old ring, keeping every write made since the start.

    Writes to moving keys get 503 (with Retry-After) while their rows are copied back.

    \b
    Example:
      kvstore reshard abort --config shards.yaml
    """
    settings = settings_or_exit(config_file)

    async def step() -> RingRecord:
        async with open_fleet(settings) as fleet:
            with _progress(not as_json, await _rows_on(fleet, previous=False), "moving back") as advance:
                return await migration.abort(fleet.shards, fleet.record, batch_size, advance)

    record = _run(step)
    _report(as_json, _record_document(record), f"aborted: back on the old ring (epoch {record.epoch})")


async def _rows_on(fleet: Fleet, previous: bool) -> int:
    """Rows (engine estimates) on the shards a step walks: a progress bar's length."""
    ring = fleet.record.previous_ring() if previous else fleet.record.ring()
    total = 0
    for name in () if ring is None else ring.names:
        with suppress(KvError):  # no estimate: the bar is only shorter
            total += (await fleet.shards[name].primary.table_stats()).rows or 0
    return max(total, 1)


@reshard.command("status")
@config_option
@_json_option
def status(config_file: str | None, as_json: bool) -> None:
    """The migration's phase, and per source shard rows copied, rate and ETA.

    \b
    Example:
      kvstore reshard status --config shards.yaml --json
    """
    settings = settings_or_exit(config_file)

    async def step() -> tuple[RingRecord, list[migration.SourceStatus]]:
        async with open_fleet(settings) as fleet:
            copying = fleet.record.phase in (Phase.COPYING, Phase.ABORTING)
            return fleet.record, await migration.copy_status(fleet.shards, fleet.record) if copying else []

    record, statuses = _run(step)
    document = _record_document(record) | {"sources": [asdict(s) | {"eta_s": s.eta_s} for s in statuses]}
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(
        f"ring epoch {record.epoch}: {record.phase.value}"
        + (f" (migration {record.migration})" if record.migration else "")
    )
    click.echo(f"shards: {', '.join(_names(record.shards))}")
    if record.previous is not None:
        click.echo(f"from:   {', '.join(_names(record.previous))}")
    if statuses:
        rows = [
            (
                s.shard,
                f"{s.scanned:,}",
                "-" if s.rows_estimate is None else f"~{s.rows_estimate:,}",
                f"{s.copied:,}",
                "-" if s.rate_per_s is None else f"{s.rate_per_s:,.0f}",
                "done" if s.done else ("-" if s.eta_s is None else f"{s.eta_s:,.0f} s"),
            )
            for s in statuses
        ]
        click.echo("")
        click.echo(table(("SOURCE", "SCANNED", "ROWS (EST.)", "COPIED", "ROWS/S", "ETA"), rows, right={1, 2, 3, 4, 5}))


@reshard.command("run")
@config_option
@_to_option
@_batch_option
@_pace_option
@_write_config_option
@_json_option
def run(
    config_file: str | None,
    target_config: str,
    batch_size: int,
    rows_per_second: float | None,
    write_config: bool,
    as_json: bool,
) -> None:
    """start, copy, verify, cutover and cleanup in order; stops before cutover if verify is not clean.

    Resumes a migration to the same ring that an earlier run (or the single steps) left half-way,
    and does nothing when the shards already use NEW.yaml's ring. --write-config then puts the
    new shards list in the --config file, else a warning says it describes the old ring.

    \b
    Example:
      kvstore reshard run --config shards.yaml --to shards-3.yaml --write-config
    """
    settings, target = settings_or_exit(config_file), settings_or_exit(target_config)

    async def step() -> RingRecord:
        async with open_fleet(settings, target) as fleet:
            record = fleet.record
            same_ring = ring_layout(record.shards) == ring_layout(target.shard_specs)
            if record.phase is Phase.STABLE and same_ring:
                _say(as_json, f"the shards already use this ring (epoch {record.epoch}): nothing to move")
                return record
            if record.phase is not Phase.STABLE and not same_ring:
                raise ReshardError(f"a migration to another ring is {record.phase.value}; see `kvstore reshard status`")
            if record.phase in (Phase.STABLE, Phase.PREPARING):
                record = await migration.start(fleet.shards, settings, target, lambda message: _say(as_json, message))
            if record.phase is Phase.COPYING:
                fleet.record = record
                await _copy_with_progress(fleet, CopyPace(batch_size, rows_per_second), show=not as_json)
                await migration.check_cutover(fleet.shards, record)
                report = await verify(fleet.shards, record, batch_size)
                _say(as_json, f"verify: {report.scanned:,} rows, clean" if report.clean else "verify: NOT clean")
                if not report.clean:
                    _show_verify(report, as_json)
                record = await migration.cutover(fleet.shards, record, report.clean)
                _say(as_json, f"cut over (epoch {record.epoch}); cleaning up")
            fleet.record = record
            with _progress(not as_json, await _rows_on(fleet, previous=True), "cleaning up") as advance:
                return await migration.cleanup(fleet.shards, record, batch_size, advance)

    record = _run(step)
    _report(as_json, _record_document(record), f"migration finished: ring epoch {record.epoch} is stable")
    _follow_in_config(settings, record, write_config, as_json)


def _follow_in_config(settings: Settings, record: RingRecord, write: bool, as_json: bool) -> None:
    """Once the record's ring is the one in force: put it in the config file, or warn that the file is stale."""
    if ring_layout(settings.shard_specs) == ring_layout(record.shards) or settings.source is None:
        return
    if not write:
        click.echo(
            f"warning: {settings.source} still describes the old ring; update it to shards"
            f" {describe_ring(record.shards)} (--write-config does it)",
            err=True,
        )
        return
    try:
        write_shards(settings.source, record.shards)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    _say(as_json, f"wrote shards {describe_ring(record.shards)} to {settings.source}")


@click.command("verify")
@config_option
@_batch_option
@_json_option
def verify_command(config_file: str | None, batch_size: int, as_json: bool) -> None:
    """Check that every live key sits on the shard the ring says, and that moved copies agree.

    Scans every shard of the current ring record (and of the ring a migration moves from).
    Exit status 1 when anything is missing, stale or misplaced; examples name the keys.

    \b
    Example:
      kvstore verify --config shards.yaml
    """
    settings = settings_or_exit(config_file)

    async def step() -> VerifyReport:
        async with open_fleet(settings) as fleet:
            return await verify(fleet.shards, fleet.record, batch_size)

    report = _run(step)
    _show_verify(report, as_json)
    if not report.clean:
        raise SystemExit(1)


def _show_verify(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(asdict(report) | {"clean": report.clean}, indent=2))
        return
    click.echo(
        f"scanned {report.scanned:,} live rows: {report.in_place:,} in place,"
        f" {report.copies_identical:,} copies identical, {report.copies_updated:,} updated since copied;"
        f" {report.missing:,} missing, {report.stale:,} stale,"
        f" {report.misplaced:,} misplaced: " + ("CLEAN" if report.clean else "NOT CLEAN")
    )
    for finding in report.examples:
        click.echo(f"  {finding.key!r} on {finding.shard} (owner {finding.owner}): {finding.detail}")


def _record_document(record: RingRecord) -> dict[str, Any]:
    return {
        "epoch": record.epoch,
        "phase": record.phase.value,
        "migration": record.migration,
        "shards": _names(record.shards),
        "previous": None if record.previous is None else _names(record.previous),
    }


def _names(specs: Any) -> list[str]:
    return [str(spec["name"]) for spec in specs]


def _say(as_json: bool, message: str) -> None:
    if not as_json:
        click.echo(message, err=True)


def _report(as_json: bool, document: dict[str, Any], message: str) -> None:
    click.echo(json.dumps(document, indent=2) if as_json else message)
