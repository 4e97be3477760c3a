"""SLO rules: rendered PromQL passes `promtool check rules`, and the embedded evaluator fires at the same
evaluation times as `promtool test rules` on the same recorded series."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelfleet.config.operate import AlertsConfig, ModelObjective
from modelfleet.operate.evaluator import RuleEvaluator, Samples, SeriesStore, extrapolated_delta
from modelfleet.operate.promql import rule_expr, rule_groups, selector_text
from modelfleet.operate.rules import AlertRule, build_rules, duration_text, slow_edge_s

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)
SERIES_STEP_S = 60.0  # one recorded sample a minute
EVAL_STEP_S = 40.0  # evaluations fall between samples, so Prometheus's extrapolation matters
MINUTES = 300
EVALS = int(MINUTES * SERIES_STEP_S / EVAL_STEP_S)
EDGES_S = (0.05, 0.1, 0.2)
MODEL = ModelObjective(name="m", latency_ms=100.0, percentile=99.0, error_rate_percent=1.0, timeout_s=2.0)


def _rules() -> list[AlertRule]:
    alerts = AlertsConfig(evaluation_interval_s=EVAL_STEP_S, symptom_for_s=120, restarts_per_hour_max=3)
    return build_rules("f", [MODEL], alerts, "local", "", EDGES_S)


def _scenario() -> dict[str, list[float | None]]:
    """Cumulative counters per minute: healthy, then 20% errors for 40 min, then slow requests for 30 min;
    no ready replica for 6 min; a restart every 7 min for 42 min; one load failure; queue wait near the
    deadline. The 5xx series appears with the first error, as a scraped one does (None: no sample), so
    its rate extrapolates differently from the total's; the restarts cross their threshold gradually."""
    ok = err = fast = count = restarts = failures = q_sum = q_count = 0.0
    series: dict[str, list[float | None]] = defaultdict(list)
    where = 'fleet="f",model="m"'
    for minute in range(MINUTES + 1):
        requests = 600.0
        errors = 120.0 if 60 <= minute < 100 else 0.0
        slow = 300.0 if 150 <= minute < 180 else 0.0
        ok, err = ok + requests - errors, err + errors
        count, fast = count + requests, fast + requests - slow
        restarts += 1.0 if 200 <= minute < 242 and minute % 7 == 3 else 0.0
        failures += 1.0 if minute == 230 else 0.0
        q_count += 100.0
        q_sum += 100.0 * (1.5 if 250 <= minute < 270 else 0.01)
        series[f'modelfleet_router_requests_total{{{where},code="200"}}'].append(ok)
        series[f'modelfleet_router_requests_total{{{where},code="500"}}'].append(
            err if minute >= 60 else None
        )
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


def _embedded_firing(
    rules: list[AlertRule], series: dict[str, list[float | None]]
) -> list[set[tuple[int, str]]]:
    """For each evaluation, the (rule index, alertname) pairs the embedded evaluator has firing."""
    store = SeriesStore(rules, retention_s=4 * 86400)
    evaluator = RuleEvaluator(rules)
    parsed = [(*_labels(text), values) for text, values in series.items()]
    firing = []
    fed = 0
    for step in range(EVALS + 1):
        now = step * EVAL_STEP_S
        while fed <= MINUTES and fed * SERIES_STEP_S <= now:  # every sample recorded by now
            for name, labels, values in parsed:
                value = values[fed]
                if value is not None:
                    store.add(fed * SERIES_STEP_S, name, labels, value)
            fed += 1
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


def test_series_increase_by_bisection_equals_the_sample_by_sample_sum_and_stays_bounded() -> None:
    rng = random.Random(7)
    series = Samples()
    points: list[tuple[float, float]] = []
    value = 0.0
    for step in range(2000):
        value = 0.0 if rng.random() < 0.01 else value + rng.randint(0, 9)  # counter resets now and then
        series.append(step * 15.0, value)
        points.append((step * 15.0, value))
    for _ in range(200):
        end = rng.uniform(0, 2000 * 15.0)
        start = end - rng.choice([300.0, 3600.0, 6 * 3600.0])
        inside = [(t, v) for t, v in points if start <= t <= end]
        expected = extrapolated_delta(inside, start, end)
        got = series.increase(start, end)
        assert (got is None and expected is None) or got == pytest.approx(expected, rel=1e-9)
    series.trim(2000 * 15.0 - 3600)
    assert 240 <= len(series.times) <= 1000 and series.increase(2000 * 15.0 - 600, 2000 * 15.0) is not None


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
    assert not any(firing[step] for step in range(40))  # the first 26 healthy minutes
    # Check every 5th evaluation and around every change of the embedded evaluator's firing set.
    changes = {n for n in range(1, EVALS + 1) if firing[n] != firing[n - 1]}
    steps = sorted({*range(0, EVALS + 1, 5), *changes, *(n - 1 for n in changes), *(n + 1 for n in changes)})
    cases: list[dict[str, Any]] = []
    for step in (n for n in steps if 0 <= n <= EVALS):
        for name in names:
            expected = [
                {"exp_labels": rules[index].all_labels, "exp_annotations": {"summary": rules[index].summary}}
                for index, alertname in sorted(firing[step])
                if alertname == name
            ]
            cases.append(
                {"eval_time": f"{int(step * EVAL_STEP_S)}s", "alertname": name, "exp_alerts": expected}
            )
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": rule_groups("f", rules, EVAL_STEP_S)}), encoding="utf-8")
    test_file = tmp_path / "test.yaml"
    inputs = [
        {"series": text, "values": " ".join("_" if v is None else repr(v) for v in values)}
        for text, values in series.items()
    ]
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rule_file)],
                "evaluation_interval": f"{int(EVAL_STEP_S)}s",
                "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": cases}],
            }
        ),
        encoding="utf-8",
    )
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "SUCCESS" in done.stdout
    assert len(changes) >= 2 * len(names)  # every alert both fired and resolved
