"""Prometheus metrics for the model server.

Children are bound per model once, so the hot path does one `observe`/`inc` per figure and no label
lookups. With several worker processes (`--workers N`) the `serve` command sets
PROMETHEUS_MULTIPROC_DIR before the workers start and `/metrics` merges every worker's figures.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.process_collector import ProcessCollector

from modelfleet.server.batching import SHED_REASONS, ShedReason

# Latency buckets from 0.5 ms to 10 s: model servers live in the 1-300 ms range.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = (
    "success",
    "bad_request",
    "not_found",
    "too_large",
    "overloaded",
    "timeout",
    "unauthorized",
    "forbidden",
    "error",
)
_STATUS_OUTCOME = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    503: "overloaded",
    504: "timeout",
}


def outcome_for_status(status: int) -> str:
    return "success" if status < 400 else _STATUS_OUTCOME.get(status, "error")


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ModelMetrics:
    """Pre-bound metric children for one model; also the batcher's observer."""

    def __init__(self, server: ServerMetrics, model: str) -> None:
        self.request_s = server.request_s.labels(model)
        self.queue_s = server.queue_s.labels(model)
        self.compute_s = server.compute_s.labels(model)
        self.batch_items = server.batch_items.labels(model)
        self.queue_depth = server.queue_depth.labels(model)
        self.outcomes = {outcome: server.requests.labels(model, outcome) for outcome in OUTCOMES}
        self.shed = {reason: server.shed.labels(model, reason) for reason in SHED_REASONS}

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        self.compute_s.observe(compute_s)
        self.batch_items.observe(items)
        for waited_s in queue_s:
            self.queue_s.observe(waited_s)

    def on_queue_depth(self, items: int) -> None:
        self.queue_depth.set(items)

    def on_shed(self, reason: ShedReason) -> None:
        self.shed[reason].inc()


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "modelfleet_requests",
            "Inference requests by model and outcome.",
            ["model", "outcome"],
            registry=registry,
        )
        self.request_s = Histogram(
            "modelfleet_request_duration_seconds",
            "Inference request time inside the server (decode to encode).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.queue_s = Histogram(
            "modelfleet_queue_duration_seconds",
            "Time a request waited for its batch to start.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.compute_s = Histogram(
            "modelfleet_compute_duration_seconds",
            "Model run time per batch (tokenization included).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.batch_items = Histogram(
            "modelfleet_batch_size",
            "Items per model run.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "modelfleet_queue_depth",
            "Items waiting for a model run.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.load_s = Gauge(
            "modelfleet_model_load_seconds",
            "Time to load, verify and warm a model.",
            ["model", "version"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.model_ready = Gauge(
            "modelfleet_model_ready",
            "1 when the model version serves requests.",
            ["model", "version"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.http_requests = Counter(
            "modelfleet_http_requests",
            "HTTP requests by route group and status.",
            ["route", "status"],
            registry=registry,
        )
        self.shed = Counter(
            "modelfleet_shed_requests",
            "Inference requests refused (503) or failed at their deadline (504) by admission, by reason.",
            ["model", "reason"],
            registry=registry,
        )
        if not _multiprocess():
            ProcessCollector(registry=registry)
        self._models: dict[str, ModelMetrics] = {}

    def for_model(self, model: str) -> ModelMetrics:
        bound = self._models.get(model)
        if bound is None:
            bound = self._models[model] = ModelMetrics(self, model)
        return bound

    def exposition(self) -> bytes:
        if _multiprocess():
            merged = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def mark_worker_dead(pid: int) -> None:
    if _multiprocess():
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
__all__ = ["CONTENT_TYPE", "ModelMetrics", "ServerMetrics", "mark_worker_dead", "outcome_for_status"]
