"""Alert rules as data: built once from a fleet's SLOs, rendered as PromQL, evaluated locally.

Every rule is a conjunction of conditions, each a threshold on one of four expression shapes over the
fleet's own metrics (a ratio of two summed counter rates, one minus such a ratio, a summed increase,
a max of a gauge). That is all the SLO and symptom alerts need, so the PromQL text
(`modelfleet.operate.promql`) and the embedded evaluator (`modelfleet.operate.evaluator`) both work from
these objects and no PromQL is ever parsed.

The burn-rate alerts follow the SRE workbook (chapter 5, "Alerting on SLOs", multiwindow, multi-burn-rate):
an alert fires when the error budget burns ``factor`` times faster than allowed over both its long and
its short window. The budget is the SLO's allowed fraction of bad requests: ``error_rate_percent`` for
errors, ``1 - percentile/100`` for latency, where a request is bad when it is slower than ``latency_ms``
(counted at the router's request-duration bucket edge equal to the threshold, or the largest one below it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.config.fleet import FleetSpec
from modelfleet.config.operate import AlertsConfig, ModelObjective

Target = Literal["kubernetes", "local"]
SYMPTOM_WINDOW_S = 300.0
RESTART_WINDOW_S = 3600.0
ROUTER_REQUESTS = "modelfleet_router_requests_total"
ROUTER_DURATION = "modelfleet_router_request_duration_seconds"
ROUTER_READY = "modelfleet_router_ready_replicas"
SERVER_QUEUE = "modelfleet_queue_duration_seconds"
SERVER_LOAD_FAILURES = "modelfleet_model_load_failures_total"
LOCAL_RESTARTS = "modelfleet_process_restarts_total"
KUBE_RESTARTS = "kube_pod_container_status_restarts_total"


@dataclass(frozen=True, slots=True)
class Selector:
    """A metric name and label matchers, e.g. ``modelfleet_router_requests_total{model="a",code=~"5.."}``."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()  # (label, one of = != =~ !~, value)


@dataclass(frozen=True, slots=True)
class RateRatio:
    """``sum(rate(num[w])) / sum(rate(den[w]))``, or one minus it with ``complement``."""

    num: Selector
    den: Selector
    window_s: float
    complement: bool = False


@dataclass(frozen=True, slots=True)
class Increase:
    """``sum(increase(series[w]))``."""

    series: Selector
    window_s: float


@dataclass(frozen=True, slots=True)
class GaugeMax:
    """``max(series)``: the latest value of each matching series, the largest of them."""

    series: Selector


Expr = RateRatio | Increase | GaugeMax


@dataclass(frozen=True, slots=True)
class Condition:
    expr: Expr
    op: str  # ">" or "<"
    threshold: float


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert: fires when every condition holds for ``for_s`` seconds."""

    name: str
    fleet: str
    conditions: tuple[Condition, ...]
    for_s: float
    severity: str
    model: str | None
    summary: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def all_labels(self) -> dict[str, str]:
        """The alert's labels: `fleet` and `severity` route it in Alertmanager, `model` when it has one."""
        labels = {"fleet": self.fleet, "severity": self.severity, **self.labels}
        if self.model is not None:
            labels["model"] = self.model
        return labels

    @property
    def windows_s(self) -> list[float]:
        return [c.expr.window_s for c in self.conditions if not isinstance(c.expr, GaugeMax)]


def objectives(spec: FleetSpec) -> list[ModelObjective]:
    return [
        ModelObjective(
            name=m.name,
            latency_ms=m.slo.latency_ms,
            percentile=m.slo.percentile,
            error_rate_percent=m.slo.error_rate_percent,
            timeout_s=m.timeout_s,
        )
        for m in spec.models
    ]


def fleet_rules(spec: FleetSpec, target: Target, latency_edges_s: Sequence[float]) -> list[AlertRule]:
    """The rules of a fleet spec, for Kubernetes (kube-state-metrics restarts) or a local fleet;
    ``latency_edges_s``: the bucket edges of the router's request-duration histogram."""
    return build_rules(
        spec.name, objectives(spec), spec.alerts, target, spec.kubernetes.namespace, latency_edges_s
    )


def slow_edge_s(latency_ms: float, edges_s: Sequence[float]) -> float:
    """The histogram edge that splits fast from slow requests: the threshold itself when it is an edge,
    else the largest edge below it (more requests count as slow, so an alert comes early, never late)."""
    threshold_s = latency_ms / 1000
    below = [edge for edge in edges_s if edge <= threshold_s * (1 + 1e-9)]
    return max(below) if below else min(edges_s)


def build_rules(
    fleet: str,
    models: Sequence[ModelObjective],
    alerts: AlertsConfig,
    target: Target,
    namespace: str,
    latency_edges_s: Sequence[float],
) -> list[AlertRule]:
    """Every alert of the fleet: per model the burn-rate pairs and symptoms, then the fleet's restarts."""
    rules: list[AlertRule] = []
    for model in models:
        rules.extend(_burn_rate_rules(fleet, model, alerts, slow_edge_s(model.latency_ms, latency_edges_s)))
        rules.extend(_symptom_rules(fleet, model, alerts, target, namespace))
    rules.append(_restart_rule(fleet, alerts, target, namespace))
    rules.append(_load_failure_rule(fleet, alerts, target, namespace))
    return rules


def _burn_rate_rules(
    fleet: str, model: ModelObjective, alerts: AlertsConfig, edge_s: float
) -> list[AlertRule]:
    where = (("fleet", "=", fleet), ("model", "=", model.name))
    requests = Selector(ROUTER_REQUESTS, where)
    errors = Selector(ROUTER_REQUESTS, (*where, ("code", "=~", "5..")))
    fast = Selector(f"{ROUTER_DURATION}_bucket", (*where, ("le", "=", le_label(edge_s))))
    count = Selector(f"{ROUTER_DURATION}_count", where)
    budgets = (
        ("Errors", model.error_rate_percent / 100, errors, requests, False, "of requests fail (5xx)"),
        (
            "Latency",
            1 - model.percentile / 100,
            fast,
            count,
            True,
            f"of requests are slower than {edge_s * 1000:g} ms",
        ),
    )
    rules = []
    for sli, budget, num, den, complement, what in budgets:
        if budget <= 0:
            continue  # an objective of 0 bad requests has no budget to burn: any error is a breach
        for row in alerts.burn_rates:
            threshold = float(f"{row.factor * budget:.12g}")  # 14.4 x 0.01 is 0.144, not 0.14400000000000002
            conditions = tuple(
                Condition(RateRatio(num, den, window_s, complement), ">", threshold)
                for window_s in (row.long_window_s, row.short_window_s)
            )
            rules.append(
                AlertRule(
                    name=f"ModelfleetSLO{sli}BurnRate",
                    fleet=fleet,
                    conditions=conditions,
                    for_s=row.for_s,
                    severity=row.severity,
                    model=model.name,
                    summary=(
                        f"{model.name}: more than {threshold:.4g} {what} over {duration_text(row.long_window_s)} "
                        f"and {duration_text(row.short_window_s)} ({row.factor:g}x the error budget)"
                    ),
                    labels={"burn_rate": f"{row.factor:g}x", "window": duration_text(row.long_window_s)},
                )
            )
    return rules


def _symptom_rules(
    fleet: str, model: ModelObjective, alerts: AlertsConfig, target: Target, namespace: str
) -> list[AlertRule]:
    router = (("fleet", "=", fleet), ("model", "=", model.name))
    # Servers' series carry no fleet label; on Kubernetes the fleet's namespace tells them apart.
    server = (*_in_namespace(target, namespace), ("model", "=", model.name))
    wait_s = alerts.queue_wait_fraction * model.timeout_s
    queue = RateRatio(
        Selector(f"{SERVER_QUEUE}_sum", server), Selector(f"{SERVER_QUEUE}_count", server), SYMPTOM_WINDOW_S
    )
    symptoms = (
        ("ModelfleetNoReadyReplica", "critical", GaugeMax(Selector(ROUTER_READY, router)), "<", 1.0,
         f"{model.name}: no ready replica"),
        ("ModelfleetQueueWaitHigh", "warning", queue, ">", wait_s,
         f"{model.name}: mean queue wait over 5m above {wait_s:g} s ({alerts.queue_wait_fraction:g} of timeout_s)"),
    )  # fmt: skip
    return [
        AlertRule(
            name,
            fleet,
            (Condition(expr, op, threshold),),
            alerts.symptom_for_s,
            severity,
            model.name,
            summary,
        )
        for name, severity, expr, op, threshold, summary in symptoms
    ]


def _restart_rule(fleet: str, alerts: AlertsConfig, target: Target, namespace: str) -> AlertRule:
    if target == "kubernetes":  # kube-state-metrics' restart counter of the fleet's pods
        series = Selector(KUBE_RESTARTS, (("namespace", "=", namespace), ("pod", "=~", f"{fleet}-.*")))
    else:  # the local supervisor's own counter, fed to its evaluator
        series = Selector(LOCAL_RESTARTS, (("fleet", "=", fleet),))
    limit = alerts.restarts_per_hour_max
    return AlertRule(
        "ModelfleetRestartsHigh",
        fleet,
        (Condition(Increase(series, RESTART_WINDOW_S), ">", float(limit)),),
        0.0,
        "warning",
        None,
        f"{fleet}: more than {limit} process restarts in the last hour",
    )


def _load_failure_rule(fleet: str, alerts: AlertsConfig, target: Target, namespace: str) -> AlertRule:
    # Servers count failed loads without a model label (a model that never loaded keeps no series);
    # which model it was is in the server's log and in the local model_load_failed event.
    series = Selector(SERVER_LOAD_FAILURES, _in_namespace(target, namespace))
    return AlertRule(
        "ModelfleetLoadFailures",
        fleet,
        (Condition(Increase(series, SYMPTOM_WINDOW_S), ">", 0.0),),
        alerts.symptom_for_s,
        "warning",
        None,
        f"{fleet}: a model version failed to load on a server in the last 5m",
    )


def _in_namespace(target: Target, namespace: str) -> tuple[tuple[str, str, str], ...]:
    return (("namespace", "=", namespace),) if target == "kubernetes" else ()


def le_label(bound_s: float) -> str:
    """A histogram bucket's `le` label as prometheus_client writes it (and Prometheus 3 normalises to)."""
    return repr(float(bound_s))


def duration_text(seconds: float) -> str:
    """A PromQL duration: 3d, 6h, 30m, 15s (the largest unit that divides evenly; ms below a second)."""
    milliseconds = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds >= size and milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"
