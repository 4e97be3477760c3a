"""The router's own Prometheus metrics, kept as plain counters and exposed at scrape time.

prometheus_client's Counter and Histogram take a lock per update and a Histogram walks its buckets in
Python; at tens of thousands of requests a second that is a visible share of the router's CPU. The
router runs on one event-loop thread, so plain integers need no lock: each request does one dict
lookup, one bisect and three increments, and a custom collector turns the figures into the standard
counter and histogram families when /metrics is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from modelfleet.fleet.buckets import LATENCY_BUCKETS_S
from modelfleet.fleet.routing import RoutingTable, quantile_from_buckets
from modelfleet.server.host_metrics import HostCollector

# Why a request was answered 503 by the router itself instead of being sent (a fixed set of labels).
SHED_SATURATED = "saturated"  # every ready replica at its in-flight limit
SHED_RETRY_BUDGET = "retry_budget"  # a retry was due but the retry budget was spent
SHED_OVERLOADED = "overloaded"  # every ready replica refused the model and asked for a retry later
# every ready replica's adaptive window for the model is full (it refused the model lately)
SHED_WINDOW = "window"
SHED_REASONS = (SHED_SATURATED, SHED_RETRY_BUDGET, SHED_OVERLOADED, SHED_WINDOW)


class _ModelFigures:
    __slots__ = ("buckets", "by_status", "retries", "shed", "sum_s")

    def __init__(self, edges: int) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (edges + 1)  # the last one is +Inf
        self.sum_s = 0.0
        self.retries = 0
        self.shed = dict.fromkeys(SHED_REASONS, 0)

    def cumulative(self) -> list[int]:
        total, out = 0, []
        for count in self.buckets:
            total += count
            out.append(total)
        return out


class RouterMetrics(Collector):
    """Requests by model and status, latency histograms, retries, sheds, refusals and routing-table gauges.

    Only the fleet's own models get labels: the router counts nothing for a name it does not serve.
    """

    def __init__(
        self, fleet: str, table: RoutingTable, latency_buckets_s: Sequence[float] = LATENCY_BUCKETS_S
    ) -> None:
        self.fleet = fleet
        self.table = table
        self.edges_s = tuple(latency_buckets_s)
        self._bound_labels = [*(_bound_label(bound) for bound in self.edges_s), "+Inf"]
        self._models: dict[str, _ModelFigures] = {}
        # Connections refused by the transport, by setting name; set by the server that owns them.
        self.refusals: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        self.registry.register(HostCollector())

    def _figures(self, model: str) -> _ModelFigures:
        figures = self._models.get(model)
        if figures is None:
            figures = self._models[model] = _ModelFigures(len(self.edges_s))
        return figures

    # hot path ----------------------------------------------------------------------------------------

    def observe(self, model: str, status: int, elapsed_s: float) -> None:
        figures = self._models.get(model) or self._figures(model)
        by_status = figures.by_status
        by_status[status] = by_status.get(status, 0) + 1
        figures.buckets[bisect.bisect_left(self.edges_s, elapsed_s)] += 1
        figures.sum_s += elapsed_s

    def retried(self, model: str) -> None:
        self._figures(model).retries += 1

    def shed(self, model: str, reason: str) -> None:
        self._figures(model).shed[reason] += 1

    # reading -----------------------------------------------------------------------------------------

    def model_figures(self, model: str) -> dict[str, Any]:
        """Counts by status, retries and latency quantiles of one model, for `fleet status`."""
        figures = self._models.get(model) or _ModelFigures(len(self.edges_s))
        by_status = {str(code): count for code, count in sorted(figures.by_status.items())}
        bounds = [*self.edges_s, float("inf")]
        cumulative = figures.cumulative()
        result: dict[str, Any] = {
            "requests": sum(figures.by_status.values()),
            "errors": sum(count for code, count in figures.by_status.items() if code >= 500),
            "by_status": by_status,
            "retries": figures.retries,
            "shed": dict(figures.shed),
        }
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            value = quantile_from_buckets(q, bounds, cumulative)
            result[name] = None if value is None else round(value * 1000, 3)
        return result

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "modelfleet_router_requests",
            "Requests through the router by model and HTTP status.",
            labels=["fleet", "model", "code"],
        )
        duration = HistogramMetricFamily(
            "modelfleet_router_request_duration_seconds",
            "Time from request parsed to response ready, per model.",
            labels=["fleet", "model"],
        )
        retries = CounterMetricFamily(
            "modelfleet_router_retries",
            "Requests retried on another replica after a connection failure or a replica's 503.",
            labels=["fleet", "model"],
        )
        shed = CounterMetricFamily(
            "modelfleet_router_shed",
            "Requests the router answered 503 itself: every ready replica saturated, or no retry budget.",
            labels=["fleet", "model", "reason"],
        )
        refusals = CounterMetricFamily(
            "modelfleet_router_refusals",
            "Requests or connections refused by a router limit, by the setting that set it.",
            labels=["fleet", "setting"],
        )
        for setting, count in sorted(self.refusals.items()):
            refusals.add_metric([self.fleet, setting], count)
        for model, figures in sorted(self._models.items()):
            for code, count in sorted(figures.by_status.items()):
                requests.add_metric([self.fleet, model, str(code)], count)
            cumulative = figures.cumulative()
            buckets = list(zip(self._bound_labels, cumulative, strict=True))
            duration.add_metric([self.fleet, model], buckets, figures.sum_s)
            retries.add_metric([self.fleet, model], figures.retries)
            for reason, count in figures.shed.items():
                shed.add_metric([self.fleet, model, reason], count)
        yield requests
        yield duration
        yield retries
        yield shed
        yield refusals
        yield from self._table_gauges()

    def _table_gauges(self) -> Iterator[Metric]:
        # Read from the routing table at scrape time, so the hot path never touches them.
        ready = GaugeMetricFamily(
            "modelfleet_router_ready_replicas", "Ready replicas per model.", labels=["fleet", "model"]
        )
        for model in self.table.by_model:
            ready.add_metric([self.fleet, model], self.table.ready_replicas(model))
        yield ready
        outstanding = GaugeMetricFamily(
            "modelfleet_router_outstanding_requests",
            "Requests in flight per upstream.",
            labels=["fleet", "upstream"],
        )
        up = GaugeMetricFamily(
            "modelfleet_router_upstream_ready",
            "1 when the upstream answers ready.",
            labels=["fleet", "upstream"],
        )
        for replica in self.table.replicas:
            outstanding.add_metric([self.fleet, replica.name], replica.outstanding)
            up.add_metric([self.fleet, replica.name], 1 if replica.ready else 0)
        yield outstanding
        yield up


def _bound_label(bound: float) -> str:
    # prometheus_client writes bucket bounds with repr-style floats ("0.005", "1.0"); do the same.
    return repr(float(bound))
