"""wrk as the load generator: one Lua script (``lua/load.lua``) for kvstore, etcd and fixed routes.

wrk runs one thread pinned with ``taskset`` to the last core, away from where the kernel tends to
start the server (FIELD-NOTES: separate cores cut the noise). It is bounded by ``--duration`` and
by ``--timeout`` per request; the script's ``done()`` prints counts and latency percentiles as JSON.
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cpu import tree_cpu_s
from benchmarks.measurement import Measurement

SCRIPT = Path(__file__).parent / "lua" / "load.lua"
_MARKER = "WRKJSON "
_TIMEOUT_S = 5


@dataclass(frozen=True)
class LoadSpec:
    """What one wrk run sends: ``style`` as in ``load.lua``, the files it replays."""

    style: str  # "kv", "etcd" or "fixed"
    url: str
    keys_file: Path | None = None
    value_file: Path | None = None
    read_share: float = 1.0


def pinning() -> list[str]:
    """``taskset -c <last core>`` when there is more than one core and taskset exists."""
    cores = os.cpu_count() or 1
    if cores > 1 and shutil.which("taskset"):
        return ["taskset", "-c", str(cores - 1)]
    return []


def command(spec: LoadSpec, connections: int, duration_s: float) -> list[str]:
    arguments = [spec.style]
    if spec.style != "fixed":
        arguments += [str(spec.keys_file), str(spec.read_share), str(spec.value_file)]
    return [
        *pinning(),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={_TIMEOUT_S}s",
        "-s",
        str(SCRIPT),
        spec.url,
        "--",
        *arguments,
    ]


def run(
    spec: LoadSpec, target: str, workload: str, connections: int, duration_s: float, server_pid: int | None = None
) -> Measurement:
    """One wrk run; raises with wrk's output when it did not report.

    With ``server_pid`` it also reports that process tree's CPU time per request.
    """
    cpu_before = None if server_pid is None else tree_cpu_s(server_pid)
    completed = subprocess.run(
        command(spec, connections, duration_s),
        capture_output=True,
        text=True,
        timeout=duration_s + 3 * _TIMEOUT_S + 30,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(_MARKER)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    report = json.loads(lines[-1][len(_MARKER) :])
    cpu_us = None
    if cpu_before is not None and server_pid is not None and report["requests"]:
        cpu_us = round(1e6 * (tree_cpu_s(server_pid) - cpu_before) / report["requests"], 1)
    errors = sum(report[name] for name in report if name.startswith("errors_"))
    return Measurement(
        target=target,
        workload=workload,
        connections=connections,
        requests=int(report["requests"]),
        duration_s=report["duration_us"] / 1e6,
        errors=int(errors),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        tool="wrk",
        cpu_us_per_request=cpu_us,
    )
