"""The router's metrics: plain counters on the hot path, standard Prometheus families when scraped."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.fleet.buckets import LATENCY_BUCKETS_S
from modelfleet.fleet.router_config import Upstream
from modelfleet.fleet.router_metrics import RouterMetrics
from modelfleet.fleet.routing import RoutingTable


def _metrics() -> RouterMetrics:
    upstream = Upstream(name="g-0", group="g", url="http://127.0.0.1:9", models=["alpha"])
    return RouterMetrics("f", RoutingTable([upstream]))


def test_exposition_has_counters_a_cumulative_histogram_and_gauges() -> None:
    metrics = _metrics()
    for elapsed_s in (0.0001, 0.0004, 0.001, 0.004, 20.0):  # 0.001 sits exactly on a bound: le includes it
        metrics.observe("alpha", 200, elapsed_s)
    metrics.observe("alpha", 503, 0.002)
    metrics.retried("alpha")
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}

    requests = {s.labels["code"]: s.value for s in families["modelfleet_router_requests"].samples}
    assert requests == {"200": 5.0, "503": 1.0}
    buckets = {
        s.labels["le"]: s.value
        for s in families["modelfleet_router_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.00025"] == 1.0
    assert buckets["0.001"] == 3.0
    assert buckets["0.002"] == 4.0
    assert buckets["10.0"] == 5.0
    assert buckets["+Inf"] == 6.0
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    total = [
        s.value
        for s in families["modelfleet_router_request_duration_seconds"].samples
        if s.name.endswith("_sum")
    ]
    assert abs(total[0] - (0.0001 + 0.0004 + 0.001 + 0.004 + 20.0 + 0.002)) < 1e-9
    assert [s.value for s in families["modelfleet_router_retries"].samples if s.name.endswith("_total")] == [
        1.0
    ]
    assert [s.value for s in families["modelfleet_router_upstream_ready"].samples] == [0.0]


def test_status_figures_come_from_the_same_counts() -> None:
    metrics = _metrics()
    for _ in range(99):
        metrics.observe("alpha", 200, 0.0015)
    metrics.observe("alpha", 504, 3.0)
    figures = metrics.model_figures("alpha")
    assert figures["requests"] == 100 and figures["errors"] == 1
    assert figures["by_status"] == {"200": 99, "504": 1}
    assert 1.0 < figures["p50_ms"] <= 2.0
    assert metrics.model_figures("never-seen") == {
        "requests": 0,
        "errors": 0,
        "by_status": {},
        "retries": 0,
        "shed": {"saturated": 0, "retry_budget": 0, "overloaded": 0, "window": 0},
        "p50_ms": None,
        "p99_ms": None,
    }
    metrics.shed("alpha", "saturated")
    metrics.shed("alpha", "retry_budget")
    metrics.shed("alpha", "saturated")
    metrics.shed("alpha", "overloaded")
    metrics.shed("alpha", "window")
    assert metrics.model_figures("alpha")["shed"] == {
        "saturated": 2,
        "retry_budget": 1,
        "overloaded": 1,
        "window": 1,
    }
    families = {f.name: f for f in metrics.collect()}
    assert {
        s.labels["reason"]: s.value
        for s in families["modelfleet_router_shed"].samples
        if s.name.endswith("_total")
    } == {"saturated": 2.0, "retry_budget": 1.0, "overloaded": 1.0, "window": 1.0}


def test_a_fleets_slo_thresholds_are_bucket_edges_of_its_router_and_its_alert_rules() -> None:
    from modelfleet.config.fleet import FleetSpec
    from modelfleet.fleet.kube_monitoring import monitoring_objects
    from modelfleet.fleet.plan import plan_fleet
    from modelfleet.fleet.router_config import router_settings

    spec = FleetSpec.model_validate(
        {
            "name": "f",
            "models": [{"name": "alpha", "path": "/m", "slo": {"latency_ms": 70}}],
            "kubernetes": {"monitoring": {"prometheus_rule": True}},
        }
    )
    upstream = Upstream(name="g-0", group="g", url="http://127.0.0.1:9", models=["alpha"])
    plan = plan_fleet(spec, {"alpha": 200})
    settings = router_settings(plan, "127.0.0.1", 0, [upstream])
    assert 0.07 in settings.latency_buckets_s and set(LATENCY_BUCKETS_S) <= set(settings.latency_buckets_s)

    metrics = RouterMetrics("f", RoutingTable([upstream]), settings.latency_buckets_s)
    metrics.observe("alpha", 200, 0.06)  # meets a 70 ms SLO: at or below the 0.07 edge
    metrics.observe("alpha", 200, 0.072)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    buckets = {
        s.labels["le"]: s.value
        for s in families["modelfleet_router_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.05"] == 0.0 and buckets["0.07"] == 1.0 and buckets["0.075"] == 2.0

    rendered = str([o for o in monitoring_objects(plan, False) if o["kind"] == "PrometheusRule"])
    assert 'le="0.07"' in rendered and 'le="0.05"' not in rendered  # counted at the threshold, not below it
