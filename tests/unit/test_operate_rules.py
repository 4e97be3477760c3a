"""SLO rules: rendered PromQL passes `promtool check rules`, and the embedded evaluator fires at the same
evaluation times as `promtool test rules` on the same recorded series."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelfleet.config.operate import AlertsConfig, ModelObjective
from modelfleet.operate.evaluator import RuleEvaluator, SeriesStore, extrapolated_delta
from modelfleet.operate.promql import rule_expr, rule_groups, selector_text
from modelfleet.operate.rules import AlertRule, build_rules, duration_text, slow_edge_s

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)
STEP_S = 60.0  # series interval and evaluation interval of the recorded scenario
MINUTES = 300
EDGES_S = (0.05, 0.1, 0.2)
MODEL = ModelObjective(name="m", latency_ms=100.0, percentile=99.0, error_rate_percent=1.0, timeout_s=2.0)


def _rules() -> list[AlertRule]:
    alerts = AlertsConfig(evaluation_interval_s=STEP_S, symptom_for_s=120, restarts_per_hour_max=3)
    return build_rules("f", [MODEL], alerts, "local", "", EDGES_S)


def _scenario() -> dict[str, list[float]]:
    """Cumulative counters per minute: healthy, then 20% errors for 40 min, then slow requests for 30 min;
    no ready replica for 6 min; 5 restarts in 5 min; one load failure; queue wait near the deadline."""
    ok = err = fast = count = restarts = failures = q_sum = q_count = 0.0
    series: dict[str, list[float]] = defaultdict(list)
    where = 'fleet="f",model="m"'
    for minute in range(MINUTES + 1):
        requests = 600.0
        errors = 120.0 if 60 <= minute < 100 else 0.0
        slow = 300.0 if 150 <= minute < 180 else 0.0
        ok, err = ok + requests - errors, err + errors
        count, fast = count + requests, fast + requests - slow
        restarts += 1.0 if 200 <= minute < 205 else 0.0
        failures += 1.0 if minute == 230 else 0.0
        q_count += 100.0
        q_sum += 100.0 * (1.5 if 250 <= minute < 270 else 0.01)
        series[f'modelfleet_router_requests_total{{{where},code="200"}}'].append(ok)
        series[f'modelfleet_router_requests_total{{{where},code="500"}}'].append(err)
        series[f'modelfleet_router_request_duration_seconds_bucket{{{where},le="0.1"}}'].append(fast)
        series[f"modelfleet_router_request_duration_seconds_count{{{where}}}"].append(count)
        series[f"modelfleet_router_ready_replicas{{{where}}}"].append(0.0 if 30 <= minute < 36 else 2.0)
        series['modelfleet_process_restarts_total{fleet="f",process="cpu-0-0"}'].append(restarts)
        series['modelfleet_model_load_failures_total{instance="cpu-0-0"}'].append(failures)
        series['modelfleet_queue_duration_seconds_sum{model="m"}'].append(q_sum)
        series['modelfleet_queue_duration_seconds_count{model="m"}'].append(q_count)
    return series


def _labels(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition("{")
    labels = dict(part.split("=", 1) for part in rest.rstrip("}").split(",")) if rest else {}
    return name, {key: value.strip('"') for key, value in labels.items()}


def _embedded_firing(rules: list[AlertRule], series: dict[str, list[float]]) -> list[set[tuple[int, str]]]:
    """For each minute, the (rule index, alertname) pairs the embedded evaluator has firing."""
    store = SeriesStore(rules, retention_s=4 * 86400)
    evaluator = RuleEvaluator(rules)
    firing = []
    for minute in range(MINUTES + 1):
        now = minute * STEP_S
        for text, values in series.items():
            name, labels = _labels(text)
            store.add(now, name, labels, values[minute])
        evaluator.evaluate(store, now)
        firing.append({(index, rules[index].name) for index in evaluator.firing})
    return firing


def test_latency_counts_slow_requests_at_the_threshold_edge_or_the_one_below() -> None:
    assert slow_edge_s(100.0, EDGES_S) == 0.1
    assert slow_edge_s(150.0, EDGES_S) == 0.1  # not an edge: the one below counts more as slow
    assert slow_edge_s(10.0, EDGES_S) == 0.05


def test_prometheus_extrapolation_of_a_counter() -> None:
    # 4 samples 60 s apart in a 300 s window: Prometheus extrapolates to the window's ends within 1.1
    # sample intervals, else by half an interval, and never below the counter's zero.
    samples = [(60.0, 10.0), (120.0, 20.0), (180.0, 30.0), (240.0, 40.0)]
    assert extrapolated_delta(samples, 0.0, 300.0) == pytest.approx(30.0 * (180 + 60 + 60) / 180)
    assert extrapolated_delta([(0.0, 5.0), (60.0, 2.0)], 0.0, 60.0) == pytest.approx(2.0)  # a reset
    assert extrapolated_delta(samples[:1], 0.0, 300.0) is None


def test_rules_render_the_workbook_table_per_model() -> None:
    rules = build_rules("f", [MODEL], AlertsConfig(), "kubernetes", "ns", EDGES_S)
    burn = [r for r in rules if r.name == "ModelfleetSLOErrorsBurnRate"]
    assert [(r.labels["burn_rate"], r.severity, [duration_text(w) for w in r.windows_s]) for r in burn] == [
        ("14.4x", "critical", ["1h", "5m"]),
        ("6x", "critical", ["6h", "30m"]),
        ("1x", "warning", ["3d", "6h"]),
    ]
    assert rule_expr(burn[0]) == (
        '(sum(rate(modelfleet_router_requests_total{fleet="f",model="m",code=~"5.."}[1h])) / '
        'sum(rate(modelfleet_router_requests_total{fleet="f",model="m"}[1h]))) > 0.144 and '
        '(sum(rate(modelfleet_router_requests_total{fleet="f",model="m",code=~"5.."}[5m])) / '
        'sum(rate(modelfleet_router_requests_total{fleet="f",model="m"}[5m]))) > 0.144'
    )
    latency = next(r for r in rules if r.name == "ModelfleetSLOLatencyBurnRate")
    assert 'le="0.1"' in rule_expr(latency) and rule_expr(latency).startswith("(1 - ")
    restarts = next(r for r in rules if r.name == "ModelfleetRestartsHigh")
    assert 'kube_pod_container_status_restarts_total{namespace="ns",pod=~"f-.*"}' in rule_expr(restarts)
    assert selector_text(latency.conditions[0].expr.den) == (  # type: ignore[union-attr]
        'modelfleet_router_request_duration_seconds_count{fleet="f",model="m"}'
    )


@needs_promtool
def test_embedded_evaluator_agrees_with_promtool_test_rules(tmp_path: Path) -> None:
    rules = _rules()
    series = _scenario()
    firing = _embedded_firing(rules, series)
    names = sorted({rule.name for rule in rules})
    fired = {name for minute in firing for _, name in minute}
    # Every kind of alert fires at some point, and none fires in the first healthy half hour.
    assert fired == set(names), f"never fired: {set(names) - fired}"
    assert not any(firing[minute] for minute in range(30))
    # Check every 5 minutes and around every change of the embedded evaluator's firing set.
    changes = {m for m in range(1, MINUTES + 1) if firing[m] != firing[m - 1]}
    minutes = sorted(
        {*range(0, MINUTES + 1, 5), *changes, *(m - 1 for m in changes), *(m + 1 for m in changes)}
    )
    minutes = [m for m in minutes if 0 <= m <= MINUTES]
    cases: list[dict[str, Any]] = []
    for minute in minutes:
        for name in names:
            expected = [
                {"exp_labels": rules[index].all_labels, "exp_annotations": {"summary": rules[index].summary}}
                for index, alertname in sorted(firing[minute])
                if alertname == name
            ]
            cases.append({"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected})
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": rule_groups("f", rules, STEP_S)}), encoding="utf-8")
    test_file = tmp_path / "test.yaml"
    inputs = [
        {"series": text, "values": " ".join(f"{v:g}" for v in values)} for text, values in series.items()
    ]
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rule_file)],
                "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": cases}],
            }
        ),
        encoding="utf-8",
    )
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "SUCCESS" in done.stdout
    assert len(changes) >= 2 * len(names)  # every alert both fired and resolved
