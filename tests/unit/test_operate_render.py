"""What the fleet renders for operating it: the PrometheusRule (checked by promtool), the Grafana
dashboard ConfigMap (schema-validated, every query valid PromQL), and the host/process figures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.fleet.kubernetes import render_fleet
from modelfleet.fleet.plan import plan_fleet
from modelfleet.server.host_metrics import HostCollector

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


def _objects(**monitoring: Any) -> list[dict[str, Any]]:
    spec = parse_spec(
        {
            "name": "demo",
            "models": [
                {"name": "a", "path": "/m/a", "slo": {"latency_ms": 50, "percentile": 99.9}},
                {"name": "b", "path": "/m/b", "slo": {"error_rate_percent": 0}},
            ],
            "auth": {"enabled": False},
            "kubernetes": {"monitoring": monitoring},
        },
        FleetSpec,
    )
    return render_fleet(plan_fleet(spec, {m.name: 200 for m in spec.models}))


def _dashboard(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    [config_map] = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "demo-dashboard"
    ]
    return config_map, json.loads(config_map["data"]["demo.json"])


def _promtool_check(tmp_path: Path, groups: list[dict[str, Any]]) -> str:
    assert PROMTOOL is not None
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    done = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_checks_the_rendered_prometheus_rule(tmp_path: Path) -> None:
    [rule] = [o for o in _objects(prometheus_rule=True) if o["kind"] == "PrometheusRule"]
    groups = rule["spec"]["groups"]
    rules = groups[0]["rules"]
    # a: 2 SLIs x 3 burn rates + 2 symptoms; b: errors have no budget (0%), latency 3 + 2; restarts, loads.
    assert len(rules) == 8 + 5 + 2
    assert f"SUCCESS: {len(rules)} rules found" in _promtool_check(tmp_path, groups)


def test_no_dashboard_unless_asked() -> None:
    assert not [o for o in _objects() if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]


@needs_promtool
def test_dashboard_config_map_is_valid_and_every_query_is_promql(tmp_path: Path) -> None:
    config_map, dashboard = _dashboard(_objects(grafana_dashboard=True))
    kubernetes_validate.validate(config_map, "1.30.0", strict=True)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert "a: p99.9 latency vs SLO 50 ms" in titles and "b: error budget left (30d)" in titles
    assert [a["name"] for a in dashboard["annotations"]["list"]] == ["Alerts", "Restarts"]
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [a["expr"] for a in dashboard["annotations"]["list"]]
    # Recording rules are any PromQL expression: promtool parses each one.
    recorded = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(queries)]
    assert f"SUCCESS: {len(queries)} rules found" in _promtool_check(
        tmp_path, [{"name": "d", "rules": recorded}]
    )


def test_host_collector_reports_group_memory_and_host_figures_with_fixed_labels() -> None:
    registry = CollectorRegistry()
    registry.register(HostCollector())
    text = generate_latest(registry).decode()
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if not line.startswith("#")
    }
    assert samples["modelfleet_group_resident_memory_bytes"] > 10 * 2**20  # this Python process at least
    assert samples["modelfleet_group_open_connections"] >= 0
    assert (
        0
        < samples['modelfleet_host_memory_bytes{kind="available"}']
        <= samples['modelfleet_host_memory_bytes{kind="total"}']
    )
    assert samples['modelfleet_host_cpu_seconds_total{mode="idle"}'] > 0
    assert len(samples) <= 12  # a fixed set, whatever runs on the host
