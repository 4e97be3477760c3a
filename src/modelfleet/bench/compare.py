"""Compare two results point by point: what changed, by how much, and whether that is better.

Points are matched by their position in the run. A change within ±5 % is called neutral: run-to-run
noise on a shared machine is about that large, so smaller changes are not claimed as wins or losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from modelfleet.bench.charts import PALETTE, Chart, Series, page, render
from modelfleet.bench.report import sweep_chart
from modelfleet.bench.results import BenchResult, PointResult
from modelfleet.fileio import write_atomic

NEUTRAL_BAND = 0.05

# (metric, how to read it from a point, higher is better, unit)
_METRICS: tuple[tuple[str, str, bool, str], ...] = (
    ("throughput", "throughput_per_s", True, "/s"),
    ("goodput", "goodput_per_s", True, "/s"),
    ("p50", "p50_ms", False, "ms"),
    ("p90", "p90_ms", False, "ms"),
    ("p99", "p99_ms", False, "ms"),
    ("p99.9", "p99_9_ms", False, "ms"),
    ("max", "max_ms", False, "ms"),
    ("error_rate", "error_rate", False, ""),
)


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    point: str
    metric: str
    a: float | None
    b: float | None
    change: float | None  # (b - a) / a
    better: bool | None  # None: neutral or not comparable
    unit: str

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.metric == "error_rate":
            return f"{value:.2%}"
        return f"{value:,.2f} {self.unit}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "metric": self.metric,
            "a": self.a,
            "b": self.b,
            "change": self.change,
            "better": self.better,
            "unit": self.unit,
        }


def _value(point: PointResult | None, attr: str) -> float | None:
    if point is None or point.summary is None:
        return None
    summary = point.summary
    if attr.endswith("_ms"):
        value = getattr(summary.latency, attr)
        return float(value) if value is not None else None
    return float(getattr(summary, attr))


def compare_results(a: BenchResult, b: BenchResult) -> list[ComparisonRow]:
    rows = []
    for index in range(max(len(a.points), len(b.points))):
        point_a = a.points[index] if index < len(a.points) else None
        point_b = b.points[index] if index < len(b.points) else None
        label_a = point_a.label if point_a is not None else "-"
        label_b = point_b.label if point_b is not None else "-"
        label = label_a if label_a == label_b else f"{label_a} → {label_b}"
        for metric, attr, higher_better, unit in _METRICS:
            value_a, value_b = _value(point_a, attr), _value(point_b, attr)
            change = better = None
            if value_a is not None and value_b is not None:
                if value_a != 0:
                    change = (value_b - value_a) / value_a
                    if abs(change) > NEUTRAL_BAND:
                        better = (change > 0) == higher_better
                elif value_b != 0:
                    better = higher_better
            rows.append(ComparisonRow(label, metric, value_a, value_b, change, better, unit))
    return rows


def write_compare_html(
    a: BenchResult, b: BenchResult, out_html: Path | str, names: tuple[str, str] = ("A", "B")
) -> Path:
    """An HTML page with the comparison table and charts for both runs."""
    rows = compare_results(a, b)
    table_rows = []
    for row in rows:
        change = "-" if row.change is None else f"{row.change:+.1%}"
        css = "" if row.better is None else ("pass" if row.better else "fail")
        cell = f'<span class="badge {css}">{change}</span>' if css else change
        table_rows.append(
            f'<tr><td class="l">{escape(row.point)}</td><td class="l">{escape(row.metric)}</td>'
            f"<td>{escape(row.fmt(row.a))}</td><td>{escape(row.fmt(row.b))}</td><td>{cell}</td></tr>"
        )
    labels = {float(p.index): p.label for p in (a.points if len(a.points) >= len(b.points) else b.points)}
    throughput = render(
        Chart(
            "Throughput per point",
            "point",
            "responses/s",
            [
                Series(
                    name,
                    [(p.index, p.summary.throughput_per_s) for p in result.points if p.summary],
                    PALETTE[i],
                    markers=True,
                )
                for i, (name, result) in enumerate(zip(names, (a, b), strict=True))
            ],
            x_labels=labels,
        )
    )
    p99 = render(
        Chart(
            "p99 latency per point",
            "point",
            "ms",
            [
                Series(
                    name,
                    [
                        (p.index, p.summary.latency.p99_ms)
                        for p in result.points
                        if p.summary and p.summary.latency.p99_ms is not None
                    ],
                    PALETTE[i],
                    markers=True,
                )
                for i, (name, result) in enumerate(zip(names, (a, b), strict=True))
            ],
            x_labels=labels,
        )
    )
    body = (
        f"<h1>{escape(names[0])} → {escape(names[1])}</h1>"
        f"<p class='muted'>A: run {escape(a.run.id)} on {escape(a.run.target)} ({escape(a.run.started_at)}) · "
        f"B: run {escape(b.run.id)} on {escape(b.run.target)} ({escape(b.run.started_at)}). "
        f"Changes within ±{NEUTRAL_BAND:.0%} are not marked.</p>"
        f"<div class='charts'>{sweep_chart([(names[0], a), (names[1], b)])}{throughput}{p99}</div>"
        "<table><tr><th class='l'>point</th><th class='l'>metric</th><th>A</th><th>B</th><th>change</th></tr>"
        + "".join(table_rows)
        + "</table>"
    )
    return write_atomic(out_html, page(f"compare {names[0]} → {names[1]}", body).encode("utf-8"))
