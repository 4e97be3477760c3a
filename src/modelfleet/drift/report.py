"""`modelfleet drift report`: one model's drift history as a self-contained HTML page (inline SVG) or JSON.

Everything comes from the monitor's history file (`drift_dir/<model>.jsonl`): each judged assessment holds
its findings and both histograms of every feature on shared bins, so the report needs no live fleet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from modelfleet import fileio
from modelfleet.bench.charts import PALETTE, Chart, Series, fmt_number, page, render
from modelfleet.drift.monitor import history_file, read_history
from modelfleet.errors import NotFound
from modelfleet.fleet.state import FleetPaths, read_state

_BAR_WIDTH = 660
_BAR_HEIGHT = 220


def drift_summary(paths: FleetPaths, model: str) -> dict[str, Any]:
    """The model's history and last judged assessment; NotFound when the fleet does not serve it."""
    state = read_state(paths)
    if model not in state.models:
        raise NotFound(f"fleet {state.fleet} has no model {model!r} (models: {', '.join(state.models)})")
    history = read_history(history_file(paths.drift_dir, model))
    return {
        "fleet": state.fleet,
        "model": model,
        "assessments": len(history),
        "drifted_assessments": sum(1 for h in history if h.get("drifted")),
        "last": history[-1] if history else None,
        "history": [
            {
                "at": h.get("at"),
                "version": h.get("version"),
                "drifted": h.get("drifted"),
                "window_items": h.get("window_items"),
                "findings": [
                    {k: f.get(k) for k in ("name", "test", "statistic", "p_value", "threshold", "drifted")}
                    for f in h.get("findings", [])
                ],
            }
            for h in history
        ],
    }


def write_drift_report(summary: dict[str, Any], output: Path) -> Path:
    fileio.write_atomic(output, render_drift_report(summary).encode("utf-8"))
    return output


def render_drift_report(summary: dict[str, Any]) -> str:
    model, last = summary["model"], summary["last"]
    parts = [f"<h1>Drift of {escape(model)} in fleet {escape(summary['fleet'])}</h1>"]
    if last is None:
        parts.append(
            "<p>No judged assessment yet: the drift monitor writes one per check once the window and the "
            "reference are large enough (docs/drift.md).</p>"
        )
        return page(f"drift: {model}", "".join(parts))
    verdict = "drifted" if last["drifted"] else "no drift"
    parts.append(
        f"<p><b>Last check</b> ({_when(last['at'])}, version {escape(str(last.get('version')))}): "
        f"<b>{verdict}</b>: {escape(last['reason'])}. Window {last['window_items']} items, reference "
        f"{last['reference_items']} items; {summary['drifted_assessments']} of {summary['assessments']} "
        "judged checks drifted.</p>"
    )
    parts.append(_findings_table(last["findings"]))
    parts.append("<h2>Scores over time</h2>")
    parts.extend(_history_charts(summary["history"]))
    parts.append("<h2>Reference and current window, per feature (last check)</h2>")
    for name, feature in last.get("details", {}).get("features", {}).items():
        parts.append(_feature_chart(name, feature))
    return page(f"drift: {model}", "".join(parts))


def _p_text(p_value: float | None) -> str:
    return "" if p_value is None else f"{p_value:.3g}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(float(at), UTC).isoformat(timespec="seconds")


def _findings_table(findings: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(f['name'])}</td><td>{escape(f['test'])}</td><td>{fmt_number(f['statistic'])}</td>"
        f"<td>{_p_text(f['p_value'])}</td><td>{f['threshold']:.3g}</td>"
        f"<td>{'yes' if f['drifted'] else 'no'}</td></tr>"
        for f in findings
    )
    return (
        "<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th>"
        f"<th>threshold</th><th>drifted</th></tr>{rows}</table>"
    )


def _history_charts(history: list[dict[str, Any]]) -> list[str]:
    """p-values (log scale) of the p-value tests and the distances of the others, against hours."""
    start = float(history[0]["at"])
    p_series: dict[str, list[tuple[float, float]]] = {}
    d_series: dict[str, list[tuple[float, float]]] = {}
    for entry in history:
        hours = (float(entry["at"]) - start) / 3600
        for finding in entry["findings"]:
            label = f"{finding['name']} ({finding['test']})"
            if finding["p_value"] is not None:
                p_series.setdefault(label, []).append((hours, max(float(finding["p_value"]), 1e-12)))
            else:
                d_series.setdefault(label, []).append((hours, float(finding["statistic"])))
    charts = []
    for title, series, log_y in (
        ("p-values (lower is more drift)", p_series, True),
        ("distances", d_series, False),
    ):
        if not series:
            continue
        drawn = [
            Series(name, points, color=PALETTE[i % len(PALETTE)], markers=len(points) < 50)
            for i, (name, points) in enumerate(sorted(series.items()))
        ]
        charts.append(
            render(Chart(title, "hours since the first check", title.split(" ")[0], drawn, log_y=log_y))
        )
    return charts


def _feature_chart(name: str, feature: dict[str, Any]) -> str:
    if feature.get("kind") == "vector":
        return f"<h3>{escape(name)}</h3><p>{feature.get('dimensions')}-dimensional vector: tested as one (MMD).</p>"
    if feature.get("kind") == "categorical":
        labels = [str(c) for c in feature["categories"]]
    else:
        edges = feature["edges"]
        labels = [f"{fmt_number(edges[i])}…{fmt_number(edges[i + 1])}" for i in range(len(edges) - 1)]
    title = f"{name} (PSI {feature.get('psi', 0):.3g})"
    return _bars(title, labels, _shares(feature["reference"]), _shares(feature["window"]))


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [count / total for count in counts]


def _bars(title: str, labels: list[str], reference: list[float], window: list[float]) -> str:
    """Grouped bars: each bin's share of the reference and of the current window."""
    left, right, top, bottom = 50, 10, 28, 48
    plot_w, plot_h = _BAR_WIDTH - left - right, _BAR_HEIGHT - top - bottom
    peak = max([*reference, *window, 1e-9])
    slot = plot_w / max(len(labels), 1)
    bar = slot * 0.38
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_BAR_WIDTH}" height="{_BAR_HEIGHT}" role="img">',
        f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>',
        f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:.0%}</text>',
    ]
    for i, label in enumerate(labels):
        x = left + i * slot + slot * 0.1
        for offset, share, color, side in (
            (0.0, reference[i], PALETTE[0], "reference"),
            (bar, window[i], PALETTE[1], "window"),
        ):
            height = plot_h * share / peak
            out.append(
                f'<rect x="{x + offset:.1f}" y="{top + plot_h - height:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{color}"><title>{escape(label)} {side}: {share:.1%}</title></rect>'
            )
        if len(labels) <= 12 or i % max(1, len(labels) // 12) == 0:
            out.append(
                f'<text class="tick" x="{x + bar:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{escape(label[:14])}</text>'
            )
    legend_y = _BAR_HEIGHT - 10
    out.append(f'<rect x="{left}" y="{legend_y - 9}" width="10" height="10" fill="{PALETTE[0]}"/>')
    out.append(f'<text class="legend" x="{left + 14}" y="{legend_y}">reference</text>')
    out.append(f'<rect x="{left + 90}" y="{legend_y - 9}" width="10" height="10" fill="{PALETTE[1]}"/>')
    out.append(f'<text class="legend" x="{left + 104}" y="{legend_y}">current window</text>')
    out.append("</svg>")
    return "".join(out)
