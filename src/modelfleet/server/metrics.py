"""Prometheus metrics for the model server.

The figures of each model (requests by outcome, latency, queue, batch sizes, shedding, loads) are one
row of `model_series.SeriesStore`, bound once per model, so the hot path does no label lookups; that
module's docstring has the measurements that made prometheus_client's labelled children unfit at
thousands of models. The server's other figures (HTTP routes, load time and readiness by version,
drift, process and host) stay prometheus_client metrics. With several worker processes
(`--workers N`) every worker is given the same `multiprocess_dir` and `/metrics` merges every
worker's figures from it (the worker pool also sets PROMETHEUS_MULTIPROC_DIR for the workers it
starts: prometheus_client reads it at import to write its values to files, and has no other switch).

Bounded: only served models (loading or loaded, bound by the repository) get their own `model` label;
every other name a client sends lands under the one label `unknown`, so made-up names cannot grow the
exposition. Rendering takes a worker thread, and its result is reused for as long as it took to render,
so a scrape flood keeps a render thread busy half of the time at most and the event loop every model
shares keeps running; a small server (a render of a millisecond) always answers with fresh figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.process_collector import ProcessCollector

from modelfleet.heap import release_free_heap
from modelfleet.server.batching import SHED_REASONS, ShedReason
from modelfleet.server.host_metrics import HostCollector
from modelfleet.server.model_series import Schema, SeriesStore, counter, gauge, histogram, mark_dead

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
    "client_closed",  # its client hung up before the answer (nginx's 499): queued, it was never run
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
_TRIM_AFTER_BYTES = 4 << 20


MODEL_SCHEMA = Schema.of(
    [
        counter("modelfleet_requests", "Inference requests by model and outcome.", "outcome", OUTCOMES),
        histogram(
            "modelfleet_request_duration_seconds",
            "Inference request time inside the server (decode to encode).",
            LATENCY_BUCKETS_S,
        ),
        histogram(
            "modelfleet_queue_duration_seconds",
            "Time a request waited for its batch to start.",
            LATENCY_BUCKETS_S,
        ),
        histogram(
            "modelfleet_compute_duration_seconds",
            "Model run time per batch (tokenization included).",
            LATENCY_BUCKETS_S,
        ),
        histogram("modelfleet_batch_size", "Items per model run.", BATCH_BUCKETS),
        gauge("modelfleet_queue_depth", "Items waiting for a model run."),
        counter(
            "modelfleet_model_warmup_runs",
            "Runs a model made at load, through its batcher, before it reported ready.",
        ),
        counter(
            "modelfleet_shed_requests",
            "Inference requests refused (503) or failed at their deadline (504) by admission, by reason.",
            "reason",
            SHED_REASONS,
        ),
        counter(
            "modelfleet_model_loads",
            "Loads of a served name (at start, or cold on its first request after it was not loaded).",
        ),
        counter(
            "modelfleet_model_evictions",
            "Unloads of a served name to stay within residency.memory_budget_bytes.",
        ),
    ]
)
_REQUESTS = MODEL_SCHEMA.family("modelfleet_requests")
_REQUEST_S = MODEL_SCHEMA.family("modelfleet_request_duration_seconds")
_QUEUE_S = MODEL_SCHEMA.family("modelfleet_queue_duration_seconds")
_COMPUTE_S = MODEL_SCHEMA.family("modelfleet_compute_duration_seconds")
_BATCH_ITEMS = MODEL_SCHEMA.family("modelfleet_batch_size")
_OUTCOME_COLUMN = {outcome: _REQUESTS.offset + index for index, outcome in enumerate(OUTCOMES)}
_QUEUE_DEPTH_COLUMN = MODEL_SCHEMA.family("modelfleet_queue_depth").offset
_WARMUP_COLUMN = MODEL_SCHEMA.family("modelfleet_model_warmup_runs").offset
_SHED = MODEL_SCHEMA.family("modelfleet_shed_requests")
_SHED_COLUMN = {reason: _SHED.offset + index for index, reason in enumerate(SHED_REASONS)}
_LOADS_COLUMN = MODEL_SCHEMA.family("modelfleet_model_loads").offset
_EVICTIONS_COLUMN = MODEL_SCHEMA.family("modelfleet_model_evictions").offset
_DETACHED = SeriesStore(MODEL_SCHEMA)
_DETACHED_ROW = _DETACHED.row("detached")


class ModelMetrics:
    """One model's row of figures; also the batcher's observer."""

    __slots__ = ("_row", "_store", "model")

    def __init__(self, store: SeriesStore, model: str) -> None:
        self._store = store
        self._row = store.row(model)
        self.model = model

    def count(self, outcome: str, amount: float = 1.0) -> None:
        """One more request with `outcome` (one of OUTCOMES)."""
        self._store.add(self._row, _OUTCOME_COLUMN[outcome], amount)

    def observe_request_s(self, seconds: float) -> None:
        self._store.observe(self._row, _REQUEST_S, seconds)

    def add_warmup_runs(self, runs: int) -> None:
        self._store.add(self._row, _WARMUP_COLUMN, runs)

    def count_load(self) -> None:
        self._store.add(self._row, _LOADS_COLUMN)

    def count_eviction(self) -> None:
        self._store.add(self._row, _EVICTIONS_COLUMN)

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        self._store.observe(self._row, _COMPUTE_S, compute_s)
        self._store.observe(self._row, _BATCH_ITEMS, items)
        self._store.observe_many(self._row, _QUEUE_S, queue_s)

    def on_queue_depth(self, items: int) -> None:
        self._store.set(self._row, _QUEUE_DEPTH_COLUMN, items)

    def on_shed(self, reason: ShedReason) -> None:
        self._store.add(self._row, _SHED_COLUMN[reason])

    def detach(self) -> None:
        """Count nowhere from now on: the handle of a released model (held by a request that started
        before its model went away) writes to a row that is never rendered, not to the row that the
        next bound name reuses."""
        self._store = _DETACHED
        self._row = _DETACHED_ROW


class ServerMetrics:
    """The server's metrics; `multiprocess_dir`: the folder every worker of a pool writes its figures to."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
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
        # No model label: a model that never loaded keeps no series (its name is in the server's log).
        self.load_failures = Counter(
            "modelfleet_model_load_failures",
            "Loads of a model version that failed (repository load at start, or an alias switch).",
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
        self.series = SeriesStore(MODEL_SCHEMA, directory=multiprocess_dir)
        self._models: dict[str, ModelMetrics] = {}
        self._unknown = ModelMetrics(self.series, UNKNOWN_MODEL)
        self._rendered: tuple[float, float, bytes] | None = None  # (finished at, render seconds, text)
        self._rendering: asyncio.Future[tuple[float, float, bytes]] | None = None

    def bind(self, model: str) -> ModelMetrics:
        """Give a served model its own label (the repository calls this when it starts loading one)."""
        bound = self._models.get(model)
        if bound is None:
            bound = self._models[model] = ModelMetrics(self.series, model)
        return bound

    def release(self, model: str) -> None:
        """Drop a model's series once no version of it is served any more."""
        bound = self._models.pop(model, None)
        if bound is None or model == UNKNOWN_MODEL:
            return  # a model named `unknown` shares the row every other name counts under
        bound.detach()
        self.series.drop(model)
        for feature, test in self._drift_series.pop(model, set()):
            for drift_gauge in (self.drift_score, self.drift_p_value):
                with contextlib.suppress(KeyError):
                    drift_gauge.remove(model, feature, test)
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
        """The per-model rows (this process's, or summed over a pool's workers) and the other figures."""
        if self._multiprocess_dir is not None:
            merged = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(merged, path=str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
            return b"".join([*self.series.render(), generate_latest(merged)])
        return b"".join([*self.series.render(), generate_latest(self.registry)])

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
        if len(text) > _TRIM_AFTER_BYTES:
            # The pieces a big render freed stay mapped in glibc's heap (25 MiB for 3,000 models, measured)
            # until trimmed; a server holds its memory between scrapes, not its largest scrape's.
            release_free_heap()
        finished = time.monotonic()
        return finished, finished - started, text

    def _rendered_done(self, future: asyncio.Future[tuple[float, float, bytes]]) -> None:
        self._rendering = None
        if not future.cancelled() and future.exception() is None:
            rendered = self._rendered = future.result()
            # Kept only while it may be reused: 3,000 models' text is 18 MB a server need not hold.
            asyncio.get_running_loop().call_later(rendered[1], self._forget, rendered)

    def _forget(self, rendered: tuple[float, float, bytes]) -> None:
        if self._rendered is rendered:
            self._rendered = None


def mark_worker_dead(pid: int, multiprocess_dir: Path) -> None:
    """Drop a dead worker's live gauges (queue depth, readiness) from the pool's merged figures."""
    prometheus_multiprocess.mark_process_dead(pid, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    mark_dead(multiprocess_dir, pid, MODEL_SCHEMA)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
__all__ = [
    "CONTENT_TYPE",
    "MODEL_SCHEMA",
    "UNKNOWN_MODEL",
    "ModelMetrics",
    "ServerMetrics",
    "mark_worker_dead",
    "outcome_for_status",
]
