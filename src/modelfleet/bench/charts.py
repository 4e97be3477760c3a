"""Small inline-SVG line charts for the HTML reports: no JavaScript, no CDN, readable offline and in print.

Hovering a marker shows its value (an SVG <title>), which every browser supports without scripts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass(slots=True)
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = False


@dataclass(slots=True)
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    log_y: bool = False
    width: int = 660
    height: int = 320
    vertical_marks: list[tuple[float, str]] = field(default_factory=list)  # (x, label), e.g. point boundaries
    y_floor_zero: bool = True
    x_labels: dict[float, str] | None = None  # categorical x axis: a label at each of these positions


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [math.floor(low / step) * step]
    while ticks[-1] < high - step * 1e-9:  # the last tick covers the highest value
        ticks.append(ticks[-1] + step)
    return [round(tick, 10) for tick in ticks]


def log_ticks(low: float, high: float) -> list[float]:
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = []
    for exponent in range(first, last + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if low <= value <= high:
                ticks.append(float(value))
    return ticks or [low, high]


def fmt_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{value:.3g}"


def render(chart: Chart) -> str:
    """The chart as an <svg> element string."""
    width = chart.width
    left, right, top = 64, 16, 34
    legend_rows = _legend_rows(chart.series, width - left - right)
    bottom = 46 + 16 * len(legend_rows)
    height = chart.height + 16 * (len(legend_rows) - 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [(x, y) for s in chart.series for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(chart.title)}" class="chart">',
        f'<text x="{left}" y="20" class="chart-title">{escape(chart.title)}</text>',
    ]
    if not values:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">no data</text></svg>'
        )
        return "".join(parts)
    xs = [x for x, _ in values] + [x for x, _ in chart.vertical_marks]
    ys = [y for _, y in values]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1.0, x_high + 1.0
    log_y = chart.log_y and min(ys) > 0
    if log_y:
        y_low, y_high = min(ys) / 1.2, max(ys) * 1.2
        y_ticks = log_ticks(y_low, y_high)

        def y_pos(y: float) -> float:
            return (
                top
                + plot_h
                - (math.log10(y) - math.log10(y_low)) / (math.log10(y_high) - math.log10(y_low)) * plot_h
            )
    else:
        y_low = 0.0 if chart.y_floor_zero else min(ys)
        y_ticks = nice_ticks(y_low, max(ys) * 1.05 if max(ys) > 0 else 1.0)
        y_high = y_ticks[-1]

        def y_pos(y: float) -> float:
            return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    if chart.x_labels:
        x_ticks = sorted(chart.x_labels)
        pad = (x_high - x_low) * 0.05
        x_low, x_high = x_low - pad, x_high + pad
    else:
        x_ticks = nice_ticks(x_low, x_high, 6)
        x_low, x_high = min(x_low, x_ticks[0]), max(x_high, x_ticks[-1])

    def x_pos(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    for tick in y_ticks:
        y = y_pos(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{fmt_number(tick)}</text>'
        )
    for tick in x_ticks:
        x = x_pos(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" class="axis"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 17}" text-anchor="middle" class="tick">'
            f"{escape(chart.x_labels[tick]) if chart.x_labels else fmt_number(tick)}</text>"
        )
    for x_value, label in chart.vertical_marks:
        x = x_pos(x_value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="mark"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{top + 10}" class="mark-label">{escape(label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 30}" text-anchor="middle" class="axis-label">{escape(chart.x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 {top + plot_h / 2})" '
        f'class="axis-label">{escape(chart.y_label)}{" (log)" if log_y else ""}</text>'
    )
    for series in chart.series:
        points = [
            (x, y) for x, y in series.points if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)
        ]
        if not points:
            continue
        path = " ".join(f"{x_pos(x):.1f},{y_pos(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if series.dashed else ""
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{series.color}" stroke-width="2"{dash}/>'
        )
        if series.markers or len(points) == 1:
            for x, y in points:
                parts.append(
                    f'<circle cx="{x_pos(x):.1f}" cy="{y_pos(y):.1f}" r="3.5" fill="{series.color}">'
                    f"<title>{escape(series.name)}: {fmt_number(y)} at {fmt_number(x)}</title></circle>"
                )
    for row, items in enumerate(legend_rows):
        parts.append(_legend(items, left, top + plot_h + 46 + 16 * row))
    parts.append("</svg>")
    return "".join(parts)


def _legend_width(item: Series) -> float:
    return 34 + 6.5 * len(item.name)


def _legend_rows(series: Sequence[Series], width: float) -> list[list[Series]]:
    rows: list[list[Series]] = [[]]
    used = 0.0
    for item in series:
        if rows[-1] and used + _legend_width(item) > width:
            rows.append([])
            used = 0.0
        rows[-1].append(item)
        used += _legend_width(item)
    return rows


def _legend(series: Sequence[Series], x: float, y: float) -> str:
    parts = []
    cursor = x
    for item in series:
        dash = ' stroke-dasharray="6 4"' if item.dashed else ""
        parts.append(
            f'<line x1="{cursor:.0f}" x2="{cursor + 22:.0f}" y1="{y - 4}" y2="{y - 4}" stroke="{item.color}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{cursor + 26:.0f}" y="{y}" class="legend">{escape(item.name)}</text>')
        cursor += _legend_width(item)
    return "".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1b1f24;margin:24px auto;max-width:1400px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left}.muted{color:#656d76;fill:#656d76}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;margin-right:6px}
.pass{background:#dafbe1;color:#116329}.fail{background:#ffebe9;color:#a40e26}.warn{background:#fff8c5;color:#7d4e00}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #d0d7de;border-radius:6px}
.chart-title{font-weight:600;font-size:13px}.tick{font-size:11px;fill:#57606a}.axis-label{font-size:12px;fill:#24292f}
.legend{font-size:11px;fill:#24292f}.grid{stroke:#eaeef2}.axis{stroke:#8c959f}.frame{fill:none;stroke:#8c959f}
.mark{stroke:#bbb;stroke-dasharray:2 3}.mark-label{font-size:10px;fill:#8c959f}
ul.warnings li{color:#7d4e00}details pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
"""


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
