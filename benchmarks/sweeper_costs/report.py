"""The figures of one run, per engine, as markdown."""

from dataclasses import dataclass, field
from typing import Any

from benchmarks.load import Throughput
from benchmarks.sweeper_costs.bias import BIAS_CALLS, BIAS_ROWS, Bias
from benchmarks.sweeper_costs.cost import FLAT_TOLERANCE, PURGE_CALLS, SAMPLE_CALLS, WARMUP_CALLS, SizePoint
from benchmarks.sweeper_costs.index_cost import PUT_LIMIT_S, PUT_OPS, PUT_TTL_MS, IndexCost
from benchmarks.sweeper_costs.reclaim import (
    GET_DROP_TARGET,
    GET_SECONDS,
    RECLAIM_EXPIRED,
    RECLAIM_LIVE,
    SWEEPER_ALONE_S,
    Reclaim,
)
from benchmarks.sweeper_costs.rows import CONCURRENCY, VALUE, K


@dataclass
class BackendReport:
    engine: str
    version: str
    cache: str
    sizes: list[SizePoint] = field(default_factory=list)
    bias: Bias | None = None
    index_cost: IndexCost | None = None
    reclaim: Reclaim | None = None


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def size_table(reports: list[BackendReport]) -> str:
    rows = [
        [
            r.engine,
            f"{p.rows:,}",
            f"{p.load_s:.1f}",
            f"{p.sample.mean_ms:.3f}",
            f"{p.sample.p50_ms:.3f}",
            f"{p.sample.p99_ms:.3f}",
            f"{p.purge.mean_ms:.3f}",
            f"{p.purge.p50_ms:.3f}",
            f"{p.purge.p99_ms:.3f}",
            "-" if p.disk_reads_per_call is None else f"{p.disk_reads_per_call:.1f}",
            p.plan,
        ]
        for r in reports
        for p in r.sizes
    ]
    header = ["Engine", "Rows", "Load s", "sample(20) mean ms", "p50 ms", "p99 ms", "purge(20 live) mean ms"]
    return markdown([*header, "p50 ms", "p99 ms", "InnoDB disk reads / call", "Sampling plan"], rows)


def size_ratio_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        small, large = r.sizes[0], r.sizes[-1]
        sample, purge = large.sample.mean_ms / small.sample.mean_ms, large.purge.mean_ms / small.purge.mean_ms
        flat = all(abs(x - 1) <= FLAT_TOLERANCE for x in (sample, purge))
        rows.append(
            [
                r.engine,
                f"{large.rows:,} / {small.rows:,}",
                f"{sample:.2f}x",
                ratio(large.sample.p50_ms, small.sample.p50_ms),
                ratio(large.sample.p99_ms, small.sample.p99_ms),
                f"{purge:.2f}x",
                ratio(large.purge.p50_ms, small.purge.p50_ms),
                ratio(large.purge.p99_ms, small.purge.p99_ms),
                "yes" if flat else "**no**",
            ]
        )
    header = ["Engine", "Sizes", "sample mean", "sample p50", "sample p99", "purge mean", "purge p50", "purge p99"]
    header.append("Means flat within ±50 %")
    return markdown(header, rows)


def bias_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        assert r.bias is not None
        for label, s in (
            ("first slots", r.bias.first),
            ("re-drawn slots", r.bias.redrawn),
            ("both summed", r.bias.both),
        ):
            rows.append(
                [
                    r.engine,
                    label,
                    f"{s.expected_per_key:g}",
                    f"{s.min} / {s.median:g} / {s.max}",
                    f"{s.cv:.3f}",
                    f"{s.cv_if_uniform:.3f}",
                    f"{s.cv_gap_model:.3f}",
                    f"{s.never_sampled} ({100 * s.never_sampled / s.keys:.2f} %)",
                    f"{s.chi2_uniform:,.0f} / {s.dof:,} ({s.chi2_per_dof_uniform:.2f})",
                    f"{s.chi2_per_dof_gap_model:.2f}",
                    f"{s.corr_count_window:.2f}",
                ]
            )
    header = ["Engine", "Run", "Expected/key", "Min / median / max", "CV", "CV if uniform", "CV gap model"]
    extra = ["Never sampled", "χ² vs uniform / dof (χ²/dof)", "χ²/dof vs gap model", "corr(count, window)"]
    return markdown([*header, *extra], rows)


def put_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        assert r.index_cost is not None
        by_case = {(c.index, c.keys, c.expiry): c.result for c in r.index_cost.cases}
        for keys in ("insert", "overwrite"):
            for expiry in ("ttl", "persistent"):
                with_, without = by_case[(True, keys, expiry)], by_case[(False, keys, expiry)]
                rows.append(
                    [
                        r.engine,
                        f"{keys} ({'fresh keys' if keys == 'insert' else 'existing keys'})",
                        "with TTL" if expiry == "ttl" else "persistent",
                        f"{with_.per_second:,.0f} ({with_.ops:,} ops)",
                        f"{without.per_second:,.0f} ({without.ops:,} ops)",
                        ratio(with_.per_second, without.per_second),
                        f"{with_.p99_ms:.2f} / {without.p99_ms:.2f}",
                        f"{created_share(with_):.0f} % / {created_share(without):.0f} %",
                        str(with_.errors + without.errors),
                    ]
                )
    header = ["Engine", "PUT", "Expiry", "Ops/s with index", "Ops/s without", "with / without"]
    return markdown([*header, "p99 ms with / without", "Created with / without", "Errors"], rows)


def created_share(result: Throughput) -> float:
    """Percentage of PUTs that created their key (inserts should be 100 %, overwrites 0 %)."""
    return 100 * result.outcomes.get("created", 0) / max(1, sum(result.outcomes.values()))


def index_timing(reports: list[BackendReport]) -> str:
    timings = [
        f"{r.engine} drop {r.index_cost.drop_s:.2f} s, rebuild {r.index_cost.rebuild_s:.2f} s"
        for r in reports
        if r.index_cost is not None
    ]
    return "Index DDL on the full table: " + "; ".join(timings) + "."


def reclaim_table(reports: list[BackendReport]) -> str:
    rows = []
    for r in reports:
        c = r.reclaim
        assert c is not None
        off, on, sweep, alone = c.without_sweeper, c.with_sweeper, c.during_load, c.alone
        drop = 1 - on.per_second / off.per_second
        rows.append(
            [
                r.engine,
                f"{off.per_second:,.0f}",
                f"{on.per_second:,.0f}",
                f"{-100 * drop:+.1f} %" + ("" if drop <= GET_DROP_TARGET else " **(target missed)**"),
                f"{off.p50_ms:.2f} / {on.p50_ms:.2f}",
                f"{off.p99_ms:.2f} / {on.p99_ms:.2f}",
                f"{sweep.dead_before - sweep.dead_after:,} of {sweep.dead_before:,} in {sweep.seconds:.1f} s",
                f"**{sweep.reclaimed_per_s:,.0f}**",
                f"{sweep.cycles:.0f} / {sweep.batches:.0f}",
                f"{sweep.stale_estimate:.3f}",
                f"{alone.reclaimed_per_s:,.0f} ({alone.cycles:.0f} / {alone.batches:.0f})",
            ]
        )
    header = ["Engine", "GET/s without", "GET/s with", "Change", "p50 ms without / with", "p99 ms without / with"]
    sweeper = ["Dead rows reclaimed under load", "Reclaimed rows/s under load", "Cycles / batches", "Stale estimate"]
    return markdown([*header, *sweeper, f"Rows/s, sweeper alone {SWEEPER_ALONE_S:g} s (cycles / batches)"], rows)


def errors_note(reports: list[BackendReport]) -> str:
    lines = []
    for r in reports:
        cases = r.index_cost.cases if r.index_cost is not None else []
        results = [(f"PUT {c.keys} {c.expiry} index={c.index}", c.result) for c in cases]
        if r.reclaim is not None:
            results += [
                ("GET without sweeper", r.reclaim.without_sweeper),
                ("GET with sweeper", r.reclaim.with_sweeper),
            ]
        lines += [
            f"- {r.engine} {label}: {t.errors} errors, first: {t.first_error}" for label, t in results if t.errors
        ]
    return "\n\nErrors:\n" + "\n".join(lines) if lines else ""


def render(reports: list[BackendReport], settings: dict[str, Any]) -> str:
    engines = ", ".join(f"{r.engine} {r.version} ({r.cache})" for r in reports)
    mode = "durable servers (fsync on commit)" if settings["durable"] else "servers not durable (no fsync on commit)"
    return (
        f"Engines: {engines}; {mode}; SQLite synchronous=FULL; values {len(VALUE)} bytes;"
        f" {settings['cpus']} CPUs; load average {settings['load_average_at_start'][0]:.2f} at the start,"
        f" {settings['load_average_at_end'][0]:.2f} at the end; wall time {settings['wall_time_s']:.0f} s.\n\n"
        f"## 1. Sampling cost vs table size\n\n"
        f"{SAMPLE_CALLS} calls of `sample_expiring({K})` and {PURGE_CALLS} of `purge` on {K} live keys, one at a"
        f" time after {WARMUP_CALLS} warm-up calls; half the rows expiring (with a slot), half persistent.\n\n"
        + size_table(reports)
        + "\n\nLarge size / small size (target: flat within ±50 %):\n\n"
        + size_ratio_table(reports)
        + f"\n\n## 2. Sampling bias\n\n{BIAS_ROWS:,} rows with an expiry, all live; {BIAS_CALLS:,} calls of"
        f" `sample_expiring({K})` ({BIAS_CALLS * K:,} draws) per run. CV: standard deviation / mean of the per-key"
        " counts. χ²/dof would be about 1.00 (± 0.014) if each call drew its keys uniformly. Gap model: a call"
        " returns key i when its random start falls between the slot of i's K-th predecessor and i's own, so key"
        " i's chance is that window (a sum of K exponential gaps: CV 1/√K) over the slot space; χ²/dof near 1"
        " against it means it explains the counts (a call returns K neighbouring keys, so their counts are"
        " correlated and χ²/dof strays further from 1 than ± 0.014). A fresh slot gives a key a fresh window;"
        " note that kvstore keeps a live expiring key's slot when it is overwritten (`COALESCE(sweep_slot, ?)`):"
        " only a key created anew (or turned from persistent to expiring) draws a new one.\n\n"
        + bias_table(reports)
        + f"\n\n## 3. Index cost on PUT throughput\n\nUnconditional `node.put` on the {settings['rows']:,}-row"
        f" table of section 1; {CONCURRENCY} tasks, {PUT_OPS:,} ops or {PUT_LIMIT_S:g} s per case, run as two"
        " half legs in the order with index, without, without, with (so that drift cancels out) and pooled."
        f" TTL writes use {PUT_TTL_MS // 1000} s; overwrites hit existing live keys of the same kind (expiring /"
        " persistent). PostgreSQL's and SQLite's index is partial (persistent rows are not in it); MariaDB's"
        " indexes every row, NULL slots included.\n\n"
        + put_table(reports)
        + "\n\n"
        + index_timing(reports)
        + f"\n\n## 4. Reclaim rate and foreground impact\n\n{RECLAIM_EXPIRED + RECLAIM_LIVE:,} rows,"
        f" {RECLAIM_EXPIRED:,} expired and {RECLAIM_LIVE:,} live with an expiry; {CONCURRENCY} tasks of `node.get`"
        f" on random live keys for {GET_SECONDS:g} s with a `ShardSweeper` (default settings) running in the same"
        f" process and pool, and for {GET_SECONDS:g} s without it, as {GET_SECONDS / 2:g} s before and"
        f" {GET_SECONDS / 2:g} s after (target: GET throughput drop ≤ {100 * GET_DROP_TARGET:.0f} %); then the sweeper"
        f" alone for {SWEEPER_ALONE_S:g} s. Dead rows are counted with SQL before and after each sweeper run; the"
        " stale estimate is `ShardSweeper.stale_estimate` at the end of the run under load.\n\n"
        + reclaim_table(reports)
        + errors_note(reports)
    )
