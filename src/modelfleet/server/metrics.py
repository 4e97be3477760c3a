"""Prometheus metrics for the model server.

Children are bound per model once, so the hot path does one `observe`/`inc` per figure and no label
lookups. With several worker processes (`--workers N`) every worker is given the same
`multiprocess_dir` and `/metrics` merges every worker's figures from it (the worker pool also sets
PROMETHEUS_MULTIPROC_DIR for the workers it starts: prometheus_client reads it at import to write its
values to files, and has no other switch).

Bounded: only served models (loading or loaded, bound by the repository) get their own `model` label;
every other name a client sends lands under the one label `unknown`, so made-up names cannot grow the
exposition. Rendering takes a worker thread, and its result is reused for as long as it took to render.
Measured on this 2-core machine with 3,000 served models (one worker, one request each): the
exposition is 17.3 MB and `generate_latest` takes 1.5 s of pure-Python CPU, a 1.5 s stall if it ran on
the event loop every model shares. In a thread the loop keeps running (1 ms timers fired a median
5 ms late, the GIL switch interval, and at worst 99 ms late during one render), and the reuse bounds a
scrape flood to rendering half of the time at most; a small server (a render of a millisecond) always
answers with fresh figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.process_collector import ProcessCollector

from modelfleet.server.batching import SHED_REASONS, ShedReason
from modelfleet.server.host_metrics import HostCollector

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


UNKNOWN_MODEL = "unknown"


class ModelMetrics:
    """Pre-bound metric children for one model; also the batcher's observer."""

    def __init__(self, server: ServerMetrics, model: str) -> None:
        self.request_s = server.request_s.labels(model)
        self.queue_s = server.queue_s.labels(model)
        self.compute_s = server.compute_s.labels(model)
        self.batch_items = server.batch_items.labels(model)
        self.queue_depth = server.queue_depth.labels(model)
        self.outcomes = {outcome: server.requests.labels(model, outcome) for outcome in OUTCOMES}
        self.warmup_runs = server.warmup_runs.labels(model)
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
    """The server's metrics; `multiprocess_dir`: the folder every worker of a pool writes its figures to."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
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
        self.warmup_runs = Counter(
            "modelfleet_model_warmup_runs",
            "Runs a model made at load, through its batcher, before it reported ready.",
            ["model"],
            registry=registry,
        )
        self.http_requests = Counter(
            "modelfleet_http_requests",
            "HTTP requests by route group and status.",
            ["route", "status"],
            registry=registry,
        )
        # No model label: a model that never loaded keeps no series (its name is in the server's log).
        self.load_failures = Counter(
            "modelfleet_model_load_failures",
            "Loads of a model version that failed (repository load at start, or an alias switch).",
            registry=registry,
        )
        self.shed = Counter(
            "modelfleet_shed_requests",
            "Inference requests refused (503) or failed at their deadline (504) by admission, by reason.",
            ["model", "reason"],
            registry=registry,
        )
        # Drift (docs/drift.md): set when this replica judges its window (GET /v2/models/{name}/drift).
        self.drift_score = Gauge(
            "modelfleet_drift_score",
            "Last drift statistic per feature and test (KS D, chi-square, normalised Wasserstein, JS, MMD²).",
            ["model", "feature", "test"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.drift_p_value = Gauge(
            "modelfleet_drift_p_value",
            "Last p-value of a drift test (p-value tests only).",
            ["model", "feature", "test"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.drift_detected = Gauge(
            "modelfleet_drift_detected",
            "1 when the last judged window of the model drifted from its reference.",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.drift_window_items = Gauge(
            "modelfleet_drift_window_items",
            "Sampled items in the model's drift window.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._drift_series: dict[str, set[tuple[str, str]]] = {}
        # A pool's exposition is merged from the workers' files, where process figures have no place.
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
            registry.register(HostCollector())
        self._models: dict[str, ModelMetrics] = {}
        self._unknown = ModelMetrics(self, UNKNOWN_MODEL)
        self._rendered: tuple[float, float, bytes] | None = None  # (finished at, render seconds, text)
        self._rendering: asyncio.Future[tuple[float, float, bytes]] | None = None

    def bind(self, model: str) -> ModelMetrics:
        """Give a served model its own label (the repository calls this when it starts loading one)."""
        bound = self._models.get(model)
        if bound is None:
            bound = self._models[model] = ModelMetrics(self, model)
        return bound

    def release(self, model: str) -> None:
        """Drop a model's series once no version of it is served any more."""
        if self._models.pop(model, None) is None or model == UNKNOWN_MODEL:
            return  # a model named `unknown` shares the children every other name counts under
        for histogram in (self.request_s, self.queue_s, self.compute_s, self.batch_items):
            histogram.remove(model)
        self.queue_depth.remove(model)
        self.warmup_runs.remove(model)
        for outcome in OUTCOMES:
            self.requests.remove(model, outcome)
        for reason in SHED_REASONS:
            self.shed.remove(model, reason)
        for feature, test in self._drift_series.pop(model, set()):
            for gauge in (self.drift_score, self.drift_p_value):
                with contextlib.suppress(KeyError):
                    gauge.remove(model, feature, test)
        for single in (self.drift_detected, self.drift_window_items):
            with contextlib.suppress(KeyError):
                single.remove(model)

    def note_drift_series(self, model: str, feature: str, test: str) -> None:
        """Remember a drift series so `release` can drop it (features are only known once judged)."""
        self._drift_series.setdefault(model, set()).add((feature, test))

    def for_model(self, model: str) -> ModelMetrics:
        """The children of a served model, or those of `unknown` for any other name: never a new label."""
        return self._models.get(model) or self._unknown

    def exposition(self) -> bytes:
        if self._multiprocess_dir is not None:
            merged = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(merged, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    async def render(self) -> bytes:
        """`exposition()` off the event loop; concurrent scrapes share one render, and a result is reused
        for as long as it took to make, so back-to-back scrapes keep a render thread busy half the time at most."""
        if self._rendered is not None:
            finished_at, took_s, text = self._rendered
            if time.monotonic() - finished_at < took_s:
                return text
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(asyncio.to_thread(self._timed_exposition))
            self._rendering.add_done_callback(self._rendered_done)
        return (await asyncio.shield(self._rendering))[2]

    def _timed_exposition(self) -> tuple[float, float, bytes]:
        started = time.monotonic()
        text = self.exposition()
        finished = time.monotonic()
        return finished, finished - started, text

    def _rendered_done(self, future: asyncio.Future[tuple[float, float, bytes]]) -> None:
        self._rendering = None
        if not future.cancelled() and future.exception() is None:
            self._rendered = future.result()


def mark_worker_dead(pid: int, multiprocess_dir: Path) -> None:
    """Drop a dead worker's live gauges (queue depth, readiness) from the pool's merged figures."""
    prometheus_multiprocess.mark_process_dead(pid, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
__all__ = [
    "CONTENT_TYPE",
    "UNKNOWN_MODEL",
    "ModelMetrics",
    "ServerMetrics",
    "mark_worker_dead",
    "outcome_for_status",
]
