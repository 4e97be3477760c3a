"""The per-request CSV (`BenchSpec.requests_csv`, `--requests-csv`) read back for analysis.

A results file keeps latency histograms of successful responses only, per point and per window of
the point's own clock. Some questions need every request: how fast refusals (503) were answered,
how latency evolved in windows aligned to an event (the end of an overload) rather than to a
point's start, what one endpoint saw while another was overloaded. Every row of the CSV carries the
request's intended, written and finished times in seconds since the generator started the run (one
clock for every point of that run), its latency from the intended send time, its HTTP status and
outcome. This module loads those rows into numpy arrays and slices them.

Percentiles here are exact (nearest rank over the raw values), not from an HDR histogram: the raw
values are all at hand and the subsets are small.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelfleet.errors import InvalidInput

Array = np.ndarray[Any, Any]
_COLUMNS = (
    "point",
    "proc",
    "endpoint",
    "measured",
    "intended_s",
    "written_s",
    "finished_s",
    "latency_ms",
    "service_ms",
    "status",
    "outcome",
)


@dataclass(frozen=True, slots=True)
class LatencyFigures:
    """Latency of a set of requests, in milliseconds from their intended send times."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Requests whose chosen time (intended or finished) fell in ``[start_s, end_s)``."""

    start_s: float
    end_s: float
    outcomes: dict[str, int]
    ok: LatencyFigures


@dataclass(frozen=True, slots=True)
class RequestLog:
    """One row per request, column by column. Times are seconds since the run started."""

    point: Array
    proc: Array
    endpoint: Array
    measured: Array
    intended_s: Array
    written_s: Array  # NaN when the request was never written (timed out in the queue, refused connection)
    finished_s: Array
    latency_ms: Array
    service_ms: Array  # NaN when never written
    status: Array  # 0 when there was no HTTP status (timeout, connection error)
    outcome: Array  # "ok", "http_503", "timeout", "connection"

    def __len__(self) -> int:
        return int(self.point.shape[0])

    def where(self, mask: Array) -> RequestLog:
        """The rows where ``mask`` (a boolean array of this log's length) is true."""
        return RequestLog(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def select(
        self,
        *,
        point: int | None = None,
        endpoint: str | None = None,
        measured: bool | None = None,
        outcome: str | None = None,
        ok: bool | None = None,
        intended_from_s: float | None = None,
        intended_until_s: float | None = None,
    ) -> RequestLog:
        """The rows matching every criterion given (an intended-time range is half open)."""
        mask = np.ones(len(self), dtype=bool)
        if point is not None:
            mask &= self.point == point
        if endpoint is not None:
            mask &= self.endpoint == endpoint
        if measured is not None:
            mask &= self.measured == measured
        if outcome is not None:
            mask &= self.outcome == outcome
        if ok is not None:
            mask &= (self.outcome == "ok") == ok
        if intended_from_s is not None:
            mask &= self.intended_s >= intended_from_s
        if intended_until_s is not None:
            mask &= self.intended_s < intended_until_s
        return self.where(mask)

    def outcomes(self) -> dict[str, int]:
        """Requests by outcome, e.g. ``{"ok": 980, "http_503": 20}``."""
        return dict(sorted(Counter(self.outcome.tolist()).items()))

    def latency(self) -> LatencyFigures:
        return latency_figures(self.latency_ms)

    def windows(
        self, width_s: float, start_s: float, end_s: float, by: Literal["intended", "finished"] = "intended"
    ) -> list[WindowFigures]:
        """Consecutive windows of ``width_s`` from ``start_s`` up to ``end_s`` (the last may be shorter);
        each counts outcomes and summarizes the latency of its successful requests."""
        if width_s <= 0:
            raise InvalidInput(f"window width must be positive, not {width_s}")
        times = self.intended_s if by == "intended" else self.finished_s
        result = []
        count = max(0, math.ceil((end_s - start_s) / width_s - 1e-9))
        for index in range(count):
            low = start_s + index * width_s
            high = min(low + width_s, end_s)
            window = self.where((times >= low) & (times < high))
            result.append(
                WindowFigures(
                    start_s=low,
                    end_s=high,
                    outcomes=window.outcomes(),
                    ok=window.select(ok=True).latency(),
                )
            )
        return result


def latency_figures(latency_ms: Array) -> LatencyFigures:
    """Nearest-rank percentiles of ``latency_ms``; None for every figure of an empty set."""
    values = np.asarray(latency_ms, dtype=np.float64)
    if values.size == 0:
        return LatencyFigures(0, None, None, None, None, None)
    p50, p90, p99 = (float(v) for v in np.percentile(values, (50, 90, 99), method="inverted_cdf"))
    return LatencyFigures(int(values.size), p50, p90, p99, float(values.max()), float(values.mean()))


def _float(text: str) -> float:
    return float(text) if text else math.nan


def read_request_log(path: Path | str) -> RequestLog:
    """Read one CSV written by the generator (with ``--procs N``, one per process: see `read_request_logs`)."""
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != _COLUMNS:
            raise InvalidInput(f"{path}: not a per-request CSV of `modelfleet bench` (header {header})")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(_COLUMNS):
                raise InvalidInput(f"{path}:{line}: expected {len(_COLUMNS)} fields, found {len(row)}")
            for name, value in zip(_COLUMNS, row, strict=True):
                columns[name].append(value)
    return RequestLog(
        point=np.array(columns["point"], dtype=np.int64),
        proc=np.array(columns["proc"], dtype=np.int64),
        endpoint=np.array(columns["endpoint"], dtype=object),
        measured=np.array([value == "1" for value in columns["measured"]], dtype=bool),
        intended_s=np.array([_float(v) for v in columns["intended_s"]], dtype=np.float64),
        written_s=np.array([_float(v) for v in columns["written_s"]], dtype=np.float64),
        finished_s=np.array([_float(v) for v in columns["finished_s"]], dtype=np.float64),
        latency_ms=np.array([_float(v) for v in columns["latency_ms"]], dtype=np.float64),
        service_ms=np.array([_float(v) for v in columns["service_ms"]], dtype=np.float64),
        status=np.array([int(v) if v else 0 for v in columns["status"]], dtype=np.int64),
        outcome=np.array(columns["outcome"], dtype=object),
    )


def read_request_logs(paths: Sequence[Path | str] | Iterable[Path | str]) -> RequestLog:
    """Several processes' CSVs as one log (each process's times are from its own start)."""
    logs = [read_request_log(path) for path in paths]
    if not logs:
        raise InvalidInput("no per-request CSV given")
    return RequestLog(
        **{f.name: np.concatenate([getattr(log, f.name) for log in logs]) for f in fields(RequestLog)}
    )
