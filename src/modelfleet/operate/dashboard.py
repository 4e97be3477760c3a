"""The fleet's Grafana dashboard (JSON model), rendered with the fleet.

Rows: fleet overview (requests, 5xx ratio, ready replicas), latency against each model's SLO (its
percentile from the router's histogram beside the target), error budget left over the SLO window,
saturation (queue depth and wait, in-flight requests, host CPU and memory, process-group memory and
connections), restarts; firing alerts and process restarts are annotations. Per-model panels stop at
`MAX_MODEL_PANELS` models so a fleet of thousands still has a dashboard Grafana can open; the overview
panels cover every model.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.operate.rules import ROUTER_DURATION, ROUTER_READY, ROUTER_REQUESTS

MAX_MODEL_PANELS = 20
BUDGET_WINDOW = "30d"
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], x: int, y: int, unit: str = "short", width: int = 12,
           kind: str = "timeseries") -> dict[str, Any]:  # fmt: skip
    return {
        "type": kind,
        "title": title,
        "datasource": _DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": _DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def grafana_dashboard(spec: FleetSpec) -> dict[str, Any]:
    fleet = f'fleet="{spec.name}"'
    panels: list[dict[str, Any]] = [
        _panel("Requests per second by model", [
            (f"sum by (model) (rate({ROUTER_REQUESTS}{{{fleet}}}[5m]))", "{{model}}")], 0, 0, "reqps"),
        _panel("5xx ratio by model", [
            (f'sum by (model) (rate({ROUTER_REQUESTS}{{{fleet},code=~"5.."}}[5m])) / '
             f"sum by (model) (rate({ROUTER_REQUESTS}{{{fleet}}}[5m]))", "{{model}}")], 12, 0, "percentunit"),
        _panel("Ready replicas by model", [(f"{ROUTER_READY}{{{fleet}}}", "{{model}}")], 0, 8),
        _panel("Restarts in the last hour", [
            ("sum by (pod, instance) (changes(process_start_time_seconds[1h]))", "{{pod}}{{instance}}")], 12, 8),
        _panel("Saturation: queue depth and in-flight requests", [
            ("sum by (model) (modelfleet_queue_depth)", "queue {{model}}"),
            (f"sum by (upstream) (modelfleet_router_outstanding_requests{{{fleet}}})", "in flight {{upstream}}"),
        ], 0, 16),
        _panel("Saturation: mean queue wait by model", [
            ("sum by (model) (rate(modelfleet_queue_duration_seconds_sum[5m])) / "
             "sum by (model) (rate(modelfleet_queue_duration_seconds_count[5m]))", "{{model}}")], 12, 16, "s"),
        _panel("Host CPU busy and memory available", [
            ('1 - avg by (instance) (rate(modelfleet_host_cpu_seconds_total{mode="idle"}[5m])) / '
             "avg by (instance) (sum by (instance, mode) (rate(modelfleet_host_cpu_seconds_total[5m])))",
             "cpu busy {{instance}}"),
            ('modelfleet_host_memory_bytes{kind="available"} / modelfleet_host_memory_bytes{kind="total"}',
             "memory available {{instance}}"),
        ], 0, 24, "percentunit"),
        _panel("Process-group memory and connections", [
            ("modelfleet_group_resident_memory_bytes", "rss {{instance}}{{pod}}"),
            ("modelfleet_group_open_connections", "connections {{instance}}{{pod}}"),
        ], 12, 24),
    ]  # fmt: skip
    y = 32
    for index, model in enumerate(spec.models[:MAX_MODEL_PANELS]):
        where = f'{fleet},model="{model.name}"'
        quantile = model.slo.percentile / 100
        latency = _panel(
            f"{model.name}: p{model.slo.percentile:g} latency vs SLO {model.slo.latency_ms:g} ms",
            [
                (f"histogram_quantile({quantile:g}, sum by (le) (rate({ROUTER_DURATION}_bucket{{{where}}}[5m])))",
                 f"p{model.slo.percentile:g}"),
                (f"vector({model.slo.latency_ms / 1000:g})", "SLO"),
            ],
            0, y + 8 * index, "s",
        )  # fmt: skip
        budget = model.slo.error_rate_percent / 100
        remaining = (
            f'1 - (sum(increase({ROUTER_REQUESTS}{{{where},code=~"5.."}}[{BUDGET_WINDOW}])) / '
            f"sum(increase({ROUTER_REQUESTS}{{{where}}}[{BUDGET_WINDOW}]))) / {budget:g}"
            if budget > 0
            else "vector(0)"
        )
        panels.append(latency)
        panels.append(
            _panel(f"{model.name}: error budget left ({BUDGET_WINDOW})", [(remaining, "left")], 12, y + 8 * index,
                   "percentunit", kind="stat")
        )  # fmt: skip
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": f"modelfleet-{spec.name}"[:40],
        "title": f"modelfleet {spec.name}",
        "tags": ["modelfleet"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Alerts",
                    "datasource": _DATASOURCE,
                    "enable": True,
                    "expr": f'ALERTS{{{fleet},alertstate="firing"}}',
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{model}} {{severity}}",
                    "iconColor": "red",
                },
                {
                    "name": "Restarts",
                    "datasource": _DATASOURCE,
                    "enable": True,
                    "expr": "changes(process_start_time_seconds[2m]) > 0",
                    "titleFormat": "restart",
                    "textFormat": "{{pod}}{{instance}}",
                    "iconColor": "orange",
                },
            ]
        },
        "panels": panels,
    }
