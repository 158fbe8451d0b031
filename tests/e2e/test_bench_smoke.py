"""`make bench-smoke`: the benchmark harness end to end, tiny and quick, so that it cannot rot.

Real PostgreSQL cluster, kvstore serve, wrk, etcd and Redis, about a second per load run. Only the
shape of the output is checked (JSON keys, markdown rows, a PNG): no timing assertions.
"""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.peers import missing_binaries
from kvstore.cluster import MissingBinaries
from kvstore.cluster.binaries import find_postgres_binaries
from tests.conftest import require

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOP_LEVEL_KEYS = {
    "schema",
    "created",
    "backend",
    "engine",
    "command",
    "plan",
    "durability",
    "measurements",
    "comparisons",
    "targets",
    "replicas",
    "sweeper",
    "sampling",
}
MEASUREMENT_KEYS = {
    "target",
    "workload",
    "connections",
    "requests",
    "duration_s",
    "errors",
    "p50_ms",
    "p99_ms",
    "per_second",
    "tool",
}


def find_bench_binaries() -> None:
    missing = missing_binaries()
    if missing:
        raise MissingBinaries("benchmark tools missing: " + ", ".join(missing))


def test_smoke_run_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    require(find_postgres_binaries)
    require(find_bench_binaries)
    command = [sys.executable, "-m", "benchmarks", "--backend", "postgres", "--smoke", "--out", str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]

    [json_path] = tmp_path.glob("*-postgres.json")
    document = json.loads(json_path.read_text())
    assert document.keys() >= TOP_LEVEL_KEYS
    assert document["schema"] == "kvstore-bench/1"
    targets = {m["target"] for m in document["measurements"]}
    assert {"kvstore", "raw", "http-floor", "etcd", "redis"} <= targets
    for measurement in document["measurements"]:
        assert measurement.keys() >= MEASUREMENT_KEYS
        assert measurement["requests"] > 0
    assert all("kvstore_vs_raw" in row for row in document["comparisons"])
    assert {"stopped", "running"} <= document["sweeper"].keys()
    assert {"replicas_1", "replicas_0"} <= document["replicas"].keys()
    assert [point["rows"] for point in document["sampling"]] == document["plan"]["sampling_rows"]

    markdown = json_path.with_suffix(".md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    for row in document["comparisons"]:
        assert any(line.startswith(f"| {row['workload']} |") for line in rows), row["workload"]
    assert f"]({json_path.with_suffix('.png').name})" in markdown

    assert json_path.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
