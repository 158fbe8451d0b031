"""deploy/grafana/kvstore.json queries only metrics a real `kvstore serve` exports."""

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kvstore.client import Client
from tests.support.server import ServerProcess

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "kvstore.json"
# Sample names each metric type exposes beside its family's name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def queries(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(queries(item))
    return found


def exported(server: ServerProcess) -> set[str]:
    """The sample names a real server's /metrics declares after some traffic (a family declares
    its type even before its first sample)."""
    with Client(server.url) as kv:
        kv.put("grafana/k", b"v", ttl=60)
        kv.get("grafana/k")
        kv.delete("grafana/k")
    httpx.get(server.url + "/readyz")
    names = set()
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_queries_is_exported(server: ServerProcess) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = queries(dashboard)
    assert len(expressions) >= 20
    used = {name for expression in expressions for name in re.findall(r"\bkvstore_[a-z_]+\b", expression)}
    assert not used - exported(server), "queried but not exported"
    # Every area the dashboard promises has its metrics queried.
    areas = ("http_requests", "shard_query", "shard_errors", "pool", "replica_lag", "replica_in_rotation")
    for area in (*areas, "sweeper_deleted", "sweeper_stale", "ring_phase", "batch_keys"):
        assert any(area in name for name in used), area


def test_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$(\w+)", target["expr"])) <= variables | {"__rate_interval"}, target["expr"]
