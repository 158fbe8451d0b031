"""Results of one backend's run: a JSON document, a markdown summary and a PNG chart.

The JSON is the record (every measurement, the plan, the command, durability settings); the
markdown and the chart are views of it. Ratios compare figures taken in the same run.
"""

import datetime
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.measurement import Measurement

SCHEMA = "kvstore-bench/1"
DURABILITY = {
    "postgres": {
        True: "fsync=on, synchronous_commit=on: a commit is on disk before the reply",
        False: "fsync=off, synchronous_commit=off: not durable",
    },
    "mysql": {
        True: "innodb_flush_log_at_trx_commit=1, sync_binlog=1: a commit is on disk before the reply",
        False: "innodb_flush_log_at_trx_commit=2, sync_binlog=0: not durable",
    },
}
PEER_DURABILITY = {
    "etcd": "single member; its WAL is fsynced before a write is acknowledged (etcd's only mode)",
    "redis": "no persistence (save '', appendonly no): the in-memory bound",
}
TARGET_SERIES = ("kvstore", "raw", "etcd")


def document(
    *,
    backend: str,
    engine: str,
    plan: dict[str, Any],
    command: str,
    measurements: list[Measurement],
    replicas: dict[str, Any],
    sweeper: dict[str, Any],
    batching: dict[str, Any],
    sampling: list[dict[str, Any]],
    skew: dict[str, float],
) -> dict[str, Any]:
    main = plan["main_connections"]
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "backend": backend,
        "engine": engine,
        "command": command,
        "plan": plan,
        "durability": {"kvstore": DURABILITY[backend][plan["durable"]], **PEER_DURABILITY},
        "zipf_top10_share": skew,
        "measurements": [m.to_json() for m in measurements],
        "replicas": replicas,
        "sweeper": sweeper,
        "batching": batching,
        "sampling": sampling,
    }
    doc["comparisons"] = comparisons(measurements)
    doc["generator_check"] = generator_check(measurements)
    doc["targets"] = targets(doc, main)
    return doc


def comparisons(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """One row per workload kvstore ran: kvstore, raw and etcd figures and the ratios between them."""
    by = {(m.target, m.workload): m for m in measurements}
    rows = []
    for m in measurements:
        if m.target != "kvstore":
            continue
        row: dict[str, Any] = {"workload": m.workload, "connections": m.connections}
        for target in TARGET_SERIES:
            found = by.get((target, m.workload))
            if found is not None:
                row[target] = {
                    "per_second": round(found.per_second, 1),
                    "p50_ms": found.p50_ms,
                    "p99_ms": found.p99_ms,
                    "errors": found.errors,
                    "cpu_us_per_request": found.cpu_us_per_request,
                }
        for peer in ("raw", "etcd"):
            if peer in row and row[peer]["per_second"]:
                row[f"kvstore_vs_{peer}"] = round(row["kvstore"]["per_second"] / row[peer]["per_second"], 3)
        rows.append(row)
    return rows


def generator_check(measurements: list[Measurement]) -> dict[str, float]:
    """wrk's best against the HTTP floor vs the most kvstore served: wrk must not be what limits kvstore."""
    floor = max((m.per_second for m in measurements if m.target == "http-floor"), default=0.0)
    served = max((m.per_second for m in measurements if m.target == "kvstore"), default=0.0)
    return {
        "wrk_floor_per_second": round(floor, 1),
        "kvstore_best_per_second": round(served, 1),
        "headroom": round(floor / served, 2) if served else 0.0,
    }


def _row(doc: dict[str, Any], workload_prefix: str, connections: int) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = doc["comparisons"]
    for row in rows:
        if row["workload"].startswith(workload_prefix) and row["connections"] == connections:
            return row
    return None


# Issue 12's goals per engine: kvstore over the raw driver loop, and over etcd's HTTP gateway.
RAW_GOALS = {"postgres": {"GET": 1.3, "PUT": 1.8}, "mysql": {"GET": 1.2, "PUT": 1.5}}
ETCD_GOALS = {"GET": 2.0, "PUT": 1.2}
CPU_PER_GET_GOAL_US = {"postgres": 60.0}


def targets(doc: dict[str, Any], main: int) -> list[dict[str, Any]]:
    """The issues' goals, each with the figure it is judged on and whether it was met."""
    found = []
    read = _row(doc, "read-99 uniform", main)
    write = _row(doc, "write-only uniform", main)
    goals = RAW_GOALS.get(doc["backend"], RAW_GOALS["mysql"])
    for op, label, row in (("GET", "GET (99:1)", read), ("PUT", "PUT (write-only)", write)):
        if row and "kvstore_vs_raw" in row:
            ratio = row["kvstore_vs_raw"]
            found.append(
                {
                    "target": f"{label} >= {goals[op]:g}x the raw driver loop",
                    "workload": row["workload"],
                    "measured": f"{ratio:.2f}x",
                    "met": ratio >= goals[op],
                }
            )
        if row:
            spread = row["kvstore"]["p99_ms"] / row["kvstore"]["p50_ms"] if row["kvstore"]["p50_ms"] else 0.0
            found.append(
                {
                    "target": f"{label} p99 <= 5x p50 at {main} connections",
                    "workload": row["workload"],
                    "measured": f"{spread:.1f}x",
                    "met": spread <= 5,
                }
            )
        if row and "kvstore_vs_etcd" in row:
            ratio = row["kvstore_vs_etcd"]
            found.append(
                {
                    "target": f"{label} >= {ETCD_GOALS[op]:g}x etcd's HTTP gateway",
                    "workload": row["workload"],
                    "measured": f"{ratio:.2f}x etcd",
                    "met": ratio >= ETCD_GOALS[op],
                }
            )
    cpu_goal = CPU_PER_GET_GOAL_US.get(doc["backend"])
    if read and cpu_goal and read["kvstore"].get("cpu_us_per_request"):
        cpu = read["kvstore"]["cpu_us_per_request"]
        found.append(
            {
                "target": f"server CPU per request <= {cpu_goal:g} us (99:1 GETs)",
                "workload": read["workload"],
                "measured": f"{cpu:g} us",
                "met": cpu <= cpu_goal,
            }
        )
    variants = doc.get("batching", {}).get("variants", {})
    single = [name for name in doc.get("batching", {}).get("raw", {}) if name.endswith(" c1")]
    if single and "batching off" in variants and "batching on" in variants:
        off, on = variants["batching off"][single[0]]["p50_ms"], variants["batching on"][single[0]]["p50_ms"]
        found.append(
            {
                "target": "p50 at 1 connection within 10% of batching off",
                "workload": single[0],
                "measured": f"{on:.3f} ms vs {off:.3f} ms",
                "met": on <= 1.1 * off,
            }
        )
    sweeper = doc["sweeper"]
    if "stopped" in sweeper and "running" in sweeper:
        stopped, running = sweeper["stopped"]["per_second"], sweeper["running"]["per_second"]
        drop = 1 - running / stopped if stopped else 0.0
        found.append(
            {
                "target": "GET throughput drops <= 10% while the sweeper reclaims",
                "workload": sweeper["workload"],
                "measured": f"GET/s {-drop:+.1%} with the sweeper",
                "met": drop <= 0.10,
            }
        )
    sampling = doc["sampling"]
    if len(sampling) >= 2 and sampling[0]["sample_mean_ms"]:
        growth = sampling[-1]["sample_mean_ms"] / sampling[0]["sample_mean_ms"]
        found.append(
            {
                "target": f"sampling cost flat (+-50%) from {sampling[0]['rows']:,} to {sampling[-1]['rows']:,} rows",
                "workload": "sample(20)",
                "measured": f"{growth:.2f}x",
                "met": abs(growth - 1) <= 0.5,
            }
        )
    return found


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(figures: dict[str, Any] | None) -> str:
    value = figures and figures.get("cpu_us_per_request")
    return "-" if not value else f"{value:.0f}"


def markdown(doc: dict[str, Any], chart_name: str) -> str:
    plan = doc["plan"]
    workload_rows = []
    for row in doc["comparisons"]:
        cells = [row["workload"]]
        for target in TARGET_SERIES:
            figures = row.get(target)
            cells += [
                _rate(figures and figures["per_second"]),
                _ms(figures and figures["p50_ms"]),
                _ms(figures and figures["p99_ms"]),
            ]
        cells += [_cpu(row.get(target)) for target in ("kvstore", "raw")]
        cells += [
            f"{row['kvstore_vs_raw']:.2f}" if "kvstore_vs_raw" in row else "-",
            f"{row['kvstore_vs_etcd']:.2f}" if "kvstore_vs_etcd" in row else "-",
        ]
        workload_rows.append(cells)
    header = ["workload"]
    for target in TARGET_SERIES:
        header += [f"{target} req/s", "p50 ms", "p99 ms"]
    header += ["kvstore CPU us/req", "raw CPU us/req", "kvstore/raw", "kvstore/etcd"]
    others = [m for m in doc["measurements"] if m["target"] in ("http-floor", "redis")]
    other_rows = [
        [m["target"], m["workload"], _rate(m["per_second"]), _ms(m["p50_ms"]), _ms(m["p99_ms"]), _cpu(m), m["tool"]]
        for m in others
    ]
    target_rows = [[t["target"], t["workload"], t["measured"], "yes" if t["met"] else "**no**"] for t in doc["targets"]]
    replica_rows = [
        [
            f"{mix}, {name.removeprefix('replicas_')} replica(s) per shard",
            _rate(v["kvstore"]["per_second"]),
            _ms(v["kvstore"]["p99_ms"]),
            _cpu(v["kvstore"]),
            _rate(v["raw"]["per_second"]),
        ]
        for name, by_mix in doc["replicas"].items()
        if name.startswith("replicas_")
        for mix, v in by_mix.items()
    ]
    sweeper_rows = [
        [
            state,
            _rate(doc["sweeper"][state]["per_second"]),
            _ms(doc["sweeper"][state]["p50_ms"]),
            _ms(doc["sweeper"][state]["p99_ms"]),
            _rate(doc["sweeper"][state]["reclaim_per_s"]),
        ]
        for state in ("stopped", "running")
        if state in doc["sweeper"]
    ]
    sampling_rows = [
        [f"{p['rows']:,}", f"{p['sample_mean_ms']:.3f}", f"{p['sample_p99_ms']:.3f}", f"{p['purge_mean_ms']:.3f}"]
        for p in doc["sampling"]
    ]
    check = doc["generator_check"]
    durability = "; ".join(f"{name}: {text}" for name, text in doc["durability"].items())
    return (
        "\n\n".join(
            [
                f"# kvstore benchmark: {doc['engine']} ({doc['created']})",
                f"Command: `{doc['command']}`. {plan['shards']} shards x {plan['replicas']} replica(s), "
                f"{plan['keys']:,} keys per value size, kvstore serve with {plan['workers']} worker(s), "
                f"{plan['duration_s']:g} s per load run, wrk pinned to the last core. Durability: {durability}.",
                f"Load generator check: wrk drove the HTTP floor at {check['wrk_floor_per_second']:,.0f} req/s,"
                f" {check['headroom']:.1f}x the most kvstore served ({check['kvstore_best_per_second']:,.0f} req/s).",
                f"![throughput and p99]({chart_name})",
                "## Targets\n\n" + _table(["target", "workload", "measured", "met"], target_rows),
                "## Workloads (same keys, values and key sequence for every target)\n\n"
                + _table(header, workload_rows),
                "## HTTP floor (`/healthz`, same server) and Redis\n\n"
                + _table(["target", "workload", "req/s", "p50 ms", "p99 ms", "server CPU us/req", "tool"], other_rows),
                "## Replica read scaling\n\n"
                + _table(["load", "kvstore req/s", "p99 ms", "kvstore CPU us/req", "raw req/s"], replica_rows),
                f"## Sweeper ({doc['sweeper'].get('dead_rows_loaded', 0):,} dead rows preloaded;"
                " legs stopped, running, running, stopped)\n\n"
                + _table(["sweeper", "GET/s", "p50 ms", "p99 ms", "reclaimed rows/s"], sweeper_rows),
                "## Natural batching A/B (same cluster, no replicas; legs in ABBA order)\n\n"
                + batching_table(doc.get("batching", {})),
                "## Sampling cost per batch (sample(20), one call at a time)\n\n"
                + _table(["rows", "mean ms", "p99 ms", "purge(20) mean ms"], sampling_rows),
            ]
        )
        + "\n"
    )


def batching_table(figures: dict[str, Any]) -> str:
    """One row per variant (and the raw driver): per workload, req/s with its ratio to raw, p50, CPU."""
    names = list(figures.get("raw", {}))
    if not names:
        return "(not measured)"
    rows = [
        [
            "raw driver",
            *(f"{_rate(figures['raw'][n]['per_second'])}, p50 {_ms(figures['raw'][n]['p50_ms'])}" for n in names),
        ]
    ]
    for variant, by_workload in figures["variants"].items():
        cells = []
        for name in names:
            row = by_workload[name]
            cells.append(
                f"{_rate(row['per_second'])} ({row['x_raw']}x raw), p50 {_ms(row['p50_ms'])},"
                f" p99 {_ms(row['p99_ms'])}, {row['cpu_us_per_request']} us CPU"
            )
        rows.append([variant, *cells])
    return _table(["variant", *names], rows)


def chart(doc: dict[str, Any], path: Path) -> None:
    """Throughput and p99 per workload at the main concurrency: kvstore vs raw driver vs etcd."""
    main = doc["plan"]["main_connections"]
    rows = [row for row in doc["comparisons"] if row["connections"] == main]
    labels = [row["workload"].rsplit(" c", 1)[0] for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(rows) + 3), 8), sharex=True)
    width = 0.8 / len(TARGET_SERIES)
    for index, target in enumerate(TARGET_SERIES):
        xs = [i + (index - 1) * width for i in range(len(rows))]
        top.bar(xs, [row.get(target, {}).get("per_second", 0) for row in rows], width, label=target)
        bottom.bar(xs, [row.get(target, {}).get("p99_ms", 0) for row in rows], width, label=target)
    floor = [m for m in doc["measurements"] if m["target"] == "http-floor" and m["connections"] == main]
    if floor:
        top.axhline(floor[0]["per_second"], color="grey", linestyle="--", label="HTTP floor (/healthz)")
    top.set_ylabel("requests/s")
    bottom.set_ylabel("p99 ms")
    top.set_title(f"kvstore on {doc['engine']} vs raw driver vs etcd, {main} connections ({doc['created'][:10]})")
    bottom.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    top.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(doc: dict[str, Any], out: Path) -> Path:
    """``<date>-<backend>.json``, ``.md`` and ``.png`` in ``out``; returns the JSON's path."""
    stem = f"{doc['created'][:10]}-{doc['backend']}"
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    chart(doc, out / f"{stem}.png")
    (out / f"{stem}.md").write_text(markdown(doc, f"{stem}.png"))
    return json_path
