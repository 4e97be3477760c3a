"""The JSON document the dashboard page polls at /ui/data, for one server or for a whole fleet.

Counters, not rates: the document carries cumulative counts (requests, errors, queue-wait sum and
count) and the time it was made; the page turns two polls into requests/s, an error rate and a mean
queue wait over the last interval. That keeps the server stateless per viewer (no window to keep for
each open page) and a restarted process's reset counters show as a restart, not as a negative rate.

Pure functions over plain data: the server and the router gather the inputs and call these.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPORT_KINDS = ("bench", "tune", "review")
# A server's outcomes that are its own failures (5xx), as the router counts codes >= 500.
_ERROR_OUTCOMES = frozenset({"error", "overloaded", "timeout"})


@dataclass(slots=True)
class ModelCounters:
    """One model's cumulative figures from a server's exposition."""

    requests: int = 0
    errors: int = 0
    queue_sum_s: float = 0.0
    queue_count: int = 0
    latency_bounds: list[float] = field(default_factory=list)
    latency_cumulative: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ServerFigures:
    models: dict[str, ModelCounters] = field(default_factory=dict)
    resident_memory_bytes: float | None = None
    start_time_unix: float | None = None


def quantile_ms(quantile: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """A quantile in milliseconds from a cumulative histogram, interpolated inside its bucket as
    Prometheus' histogram_quantile does (so the page and a Grafana panel agree); None without data."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = quantile * cumulative[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return round(lower_bound * 1000, 3)
            inside = count - lower_count
            value = (
                bound if inside <= 0 else lower_bound + (bound - lower_bound) * (rank - lower_count) / inside
            )
            return round(value * 1000, 3)
        lower_bound, lower_count = bound, count
    return round(lower_bound * 1000, 3)


_WANTED = (
    "modelfleet_requests_total{",
    "modelfleet_queue_duration_seconds_sum{",
    "modelfleet_queue_duration_seconds_count{",
    "modelfleet_request_duration_seconds_bucket{",
    "process_resident_memory_bytes ",
    "process_start_time_seconds ",
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group()], value)


def server_figures(exposition: str) -> ServerFigures:
    """Per-model counters and the process's memory and start time from a server's /metrics text.

    Reading the text, not the registry, works the same for one process and for a worker pool (whose
    figures exist only merged from the workers' files). Only the lines of the five families used are
    parsed, the rest skipped by prefix: for the 22 MB exposition of 3,000 models, prometheus_client's
    full parser took 26.7 s and this scan 2.5 s on this 2-core machine (both at a load average of 11-14).
    """
    figures = ServerFigures()
    histograms: dict[str, list[tuple[float, float]]] = {}

    def model(name: str) -> ModelCounters:
        found = figures.models.get(name)
        if found is None:
            found = figures.models[name] = ModelCounters()
        return found

    for line in exposition.splitlines():
        if not line.startswith(_WANTED):
            continue
        brace = line.find("{")
        if brace < 0:  # a process gauge: NAME VALUE
            name, _, text = line.partition(" ")
            if name == "process_resident_memory_bytes":
                figures.resident_memory_bytes = float(text)
            else:
                figures.start_time_unix = float(text)
            continue
        close = line.rfind("}")
        name = line[:brace]
        labels = {key: _unescape(value) for key, value in _LABEL.findall(line[brace + 1 : close])}
        value = float(line[close + 1 :].split()[0])
        if name == "modelfleet_requests_total":
            counters = model(labels["model"])
            counters.requests += int(value)
            if labels.get("outcome") in _ERROR_OUTCOMES:
                counters.errors += int(value)
        elif name == "modelfleet_queue_duration_seconds_sum":
            model(labels["model"]).queue_sum_s += value
        elif name == "modelfleet_queue_duration_seconds_count":
            model(labels["model"]).queue_count += int(value)
        else:
            histograms.setdefault(labels["model"], []).append((float(labels["le"]), value))
    for name, buckets in histograms.items():
        buckets.sort()
        counters = model(name)
        counters.latency_bounds = [bound for bound, _ in buckets]
        counters.latency_cumulative = [count for _, count in buckets]
    figures.models.pop("unknown", None)  # names no model serves: not a row of the page
    return figures


def process_figures(pid: int | None) -> tuple[int | None, float | None]:
    """(resident memory in bytes, start time in Unix seconds) of a live process, or (None, None)."""
    if pid is None:
        return None, None
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return int(process.memory_info().rss), float(process.create_time())
    except psutil.Error:
        return None, None


def latest_reports(folder: Path | None) -> list[dict[str, Any]]:
    """The newest bench*.html, tune*.html and review*.html in ``folder``, as links under /ui/reports/."""
    if folder is None or not folder.is_dir():
        return []
    found = []
    for kind in REPORT_KINDS:
        candidates = [path for path in folder.glob(f"{kind}*.html") if path.is_file()]
        if candidates:
            newest = max(candidates, key=lambda path: path.stat().st_mtime)
            found.append(
                {
                    "kind": kind,
                    "name": newest.name,
                    "url": f"/ui/reports/{newest.name}",
                    "modified_at": newest.stat().st_mtime,
                }
            )
    return found


def report_file(folder: Path | None, name: str) -> Path | None:
    """The report ``name`` if it is one of the latest reports linked (never any other file of the folder)."""
    for report in latest_reports(folder):
        if report["name"] == name:
            assert folder is not None
            return folder / name
    return None


def _slo(objective: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if objective is None:
        return None
    return {
        "latency_ms": objective["latency_ms"],
        "percentile": objective["percentile"],
        "error_rate_percent": objective["error_rate_percent"],
    }


def _model_row(
    name: str,
    counters: ModelCounters | None,
    ready_replicas: int,
    replicas: int,
    restarts: int,
    objective: Mapping[str, Any] | None,
) -> dict[str, Any]:
    counters = counters or ModelCounters()
    return {
        "name": name,
        "ready_replicas": ready_replicas,
        "replicas": replicas,
        "requests": counters.requests,
        "errors": counters.errors,
        "p50_ms": quantile_ms(0.5, counters.latency_bounds, counters.latency_cumulative),
        "p99_ms": quantile_ms(0.99, counters.latency_bounds, counters.latency_cumulative),
        "queue_sum_s": round(counters.queue_sum_s, 6),
        "queue_count": counters.queue_count,
        "restarts": restarts,
        "slo": _slo(objective),
    }


def _uptime_s(started_at: float | None, now: float) -> float | None:
    return None if started_at is None else round(max(0.0, now - started_at), 1)


def server_document(
    name: str,
    index: Iterable[Mapping[str, Any]],
    figures: ServerFigures,
    refresh_s: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The one-server page: each served model (its repository state), this process, no event feed."""
    now = time.time() if now is None else now
    models: dict[str, dict[str, Any]] = {}
    for entry in index:
        model_name = str(entry.get("name", ""))
        ready = entry.get("state") == "READY"
        row = models.get(model_name)
        if row is None:
            models[model_name] = _model_row(
                model_name, figures.models.get(model_name), int(ready), 1, 0, None
            )
        elif ready:
            row["ready_replicas"] = 1
    return {
        "kind": "server",
        "name": name,
        "at": now,
        "refresh_s": refresh_s,
        "models": list(models.values()),
        "processes": [
            {
                "id": "server",
                "kind": "server",
                "state": "ready"
                if models and all(m["ready_replicas"] for m in models.values())
                else "loading",
                "pid": None,
                "uptime_s": _uptime_s(figures.start_time_unix, now),
                "rss_bytes": figures.resident_memory_bytes,
                "restarts": 0,
            }
        ],
        "events": [],
        "reports": [],
    }


@dataclass(slots=True)
class FleetInputs:
    """What the router gathers for one poll (see fleet/router_ui.py)."""

    fleet: str
    status: dict[str, Any]  # Router.status()
    processes: list[dict[str, Any]]  # state.json's process records (empty without a state folder)
    objectives: dict[str, dict[str, Any]]  # model → its SLO (operate.json's ModelObjective)
    replica_figures: dict[str, ServerFigures]  # replica id → its figures (those that answered)
    events: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    memory: dict[str, tuple[int | None, float | None]]  # process id → process_figures(pid)


def fleet_document(inputs: FleetInputs, refresh_s: float, now: float | None = None) -> dict[str, Any]:
    """The fleet page: every model with its replicas and SLO, every process, the event and alert feed.

    Requests, errors and latency are the router's (what clients saw, retries and sheds included); the
    queue wait is summed over the replicas that answered.
    """
    now = time.time() if now is None else now
    models = []
    for name, figures in inputs.status.get("models", {}).items():
        replica_names = [replica["name"] for replica in figures.get("replicas", [])]
        counters = ModelCounters(
            requests=int(figures.get("requests", 0)), errors=int(figures.get("errors", 0))
        )
        for replica in replica_names:
            served = inputs.replica_figures.get(replica)
            found = None if served is None else served.models.get(name)
            if found is not None:
                counters.queue_sum_s += found.queue_sum_s
                counters.queue_count += found.queue_count
        restarts = sum(
            int(record.get("restarts", 0))
            for record in inputs.processes
            if record.get("kind") == "server" and name in record.get("models", [])
        )
        row = _model_row(
            name,
            counters,
            int(figures.get("ready_replicas", 0)),
            len(replica_names),
            restarts,
            inputs.objectives.get(name),
        )
        row["p50_ms"], row["p99_ms"] = figures.get("p50_ms"), figures.get("p99_ms")
        row["retries"] = int(figures.get("retries", 0))
        models.append(row)
    processes = []
    for record in inputs.processes:
        rss, created = inputs.memory.get(str(record.get("id")), (None, None))
        processes.append(
            {
                "id": record.get("id"),
                "kind": record.get("kind"),
                "state": record.get("state"),
                "pid": record.get("pid"),
                "uptime_s": _uptime_s(created if created is not None else record.get("started_at"), now),
                "rss_bytes": rss,
                "restarts": int(record.get("restarts", 0)),
            }
        )
    return {
        "kind": "fleet",
        "name": inputs.fleet,
        "at": now,
        "refresh_s": refresh_s,
        "ready": bool(inputs.status.get("ready")),
        "models": models,
        "processes": processes,
        "events": inputs.events,
        "reports": inputs.reports,
    }


def event_rows(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fields of each event the feed shows, newest first."""
    rows = [
        {
            "at": event.get("at"),
            "kind": event.get("kind"),
            "severity": event.get("severity"),
            "status": event.get("status"),
            "summary": event.get("summary"),
            "model": event.get("model"),
            "process": event.get("process"),
        }
        for event in events
    ]
    rows.reverse()
    return rows
