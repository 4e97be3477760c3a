"""The tune page of `modelfleet report`: Pareto front of cost vs p99, capacity per configuration, search progress.

Rendered from a saved `tune-results.json` alone, with the bench report's inline-SVG helpers.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from modelfleet.bench.charts import PALETTE, Chart, Series, page, render
from modelfleet.fileio import write_atomic
from modelfleet.tune.results import TrialRecord, TuneResult, read_result


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower is better on both), sorted by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _priced(result: TuneResult) -> list[TrialRecord]:
    return [t for t in result.trials if t.status == "ok" and t.cost_per_million is not None and t.at_target]


def pareto_chart(result: TuneResult) -> str:
    trials = _priced(result)
    points = [(t.at_target.p99_ms or 0.0, t.cost_per_million or 0.0) for t in trials if t.at_target]
    by_hardware: dict[int, list[tuple[float, float]]] = {}
    for trial, point in zip(trials, points, strict=True):
        by_hardware.setdefault(trial.hardware, []).append(point)
    series = [
        Series(
            f"{result.hardware[h].label} ({result.hardware[h].instance_type})",
            [],
            PALETTE[(i + 1) % len(PALETTE)],
            markers=True,
        )
        for i, h in enumerate(sorted(by_hardware))
    ]
    for item, hardware in zip(series, sorted(by_hardware), strict=True):
        item.points = sorted(by_hardware[hardware])  # one marker per configuration, joined in p99 order
    front = Series("Pareto front", pareto_front(points), PALETTE[0], dashed=True, markers=True)
    chart = Chart(
        "$ per 1M conforming vs p99 at the target rate",
        "p99 at per-replica target (ms)",
        "$ per 1M conforming",
        [front, *series],
    )
    return render(chart)


def capacity_chart(result: TuneResult) -> str:
    trials = sorted(_priced(result), key=lambda t: -t.capacity_per_s)
    low = Series(
        "capacity (lowest repeat)",
        [(i, t.capacity_per_s) for i, t in enumerate(trials)],
        PALETTE[0],
        markers=True,
    )
    high = Series(
        "highest repeat",
        [(i, max(t.capacity_runs_per_s or [t.capacity_per_s])) for i, t in enumerate(trials)],
        PALETTE[1],
        dashed=True,
        markers=True,
    )
    chart = Chart(
        "Capacity under the SLO per configuration",
        "configuration (by capacity)",
        "conforming per second",
        [low, high],
    )
    chart.x_labels = {float(i): str(i + 1) for i in range(len(trials))}
    return render(chart)


def progress_chart(result: TuneResult) -> str:
    best: list[tuple[float, float]] = []
    each: list[tuple[float, float]] = []
    lowest = None
    for trial in sorted(result.trials, key=lambda t: t.index):
        if trial.status == "ok" and trial.fleet_price_per_h is not None:
            each.append((trial.index + 1, trial.fleet_price_per_h))
            lowest = trial.fleet_price_per_h if lowest is None else min(lowest, trial.fleet_price_per_h)
        if lowest is not None:
            best.append((trial.index + 1, lowest))
    series = [
        Series("best so far", best, PALETTE[0]),
        Series("each trial", each, PALETTE[2], dashed=True, markers=True),
    ]
    chart = Chart("Search progress", "trial", "fleet $ per hour at the target", series)
    return render(chart)


def _money(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"${value:.{digits}f}"


def ranked_table(result: TuneResult) -> str:
    by_key = {t.key: t for t in result.trials}
    winner = result.recommendation.key if result.recommendation else None
    rows = []
    for rank, key in enumerate(result.ranking, start=1):
        t = by_key[key]
        hw = result.hardware[t.hardware]
        runs = t.capacity_runs_per_s or [t.capacity_per_s]
        spread = f"{min(runs):,.0f}–{max(runs):,.0f}" if len(runs) > 1 else "–"
        at = t.at_target
        mark = " ★" if key == winner else ""
        rows.append(
            f"<tr><td>{rank}{mark}</td><td class='l'>{escape(t.label)}</td><td class='l'>{escape(hw.instance_type)}</td>"
            f"<td>{escape(t.status)}</td><td>{'≥ ' if t.capacity_at_least else ''}{t.capacity_per_s:,.1f}</td><td>{spread}</td>"
            f"<td>{_ms(at.p50_ms if at else None)}</td><td>{_ms(at.p99_ms if at else None)}</td>"
            f"<td>{t.replicas or '–'}</td><td>{t.nodes or '–'}</td><td>{_money(t.fleet_price_per_h)}</td>"
            f"<td>{_money(t.cost_per_million)}</td></tr>"
        )
    head = (
        "<tr><th>#</th><th class='l'>configuration</th><th class='l'>instance</th><th>status</th><th>capacity/s</th>"
        "<th>spread</th><th>p50 at target</th><th>p99 at target</th><th>replicas</th><th>nodes</th><th>fleet $/h</th>"
        "<th>$/1M conforming</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def render_tune_page(name: str, result: TuneResult) -> str:
    title = f"modelfleet tune — {result.slo} at {result.target_rate_per_s:,.0f}/s"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='muted'>{escape(name)} · {escape(result.started_at)} · {escape(result.status)} · strategy {escape(result.strategy)} · prices {escape(result.price_table.get('sources', ''))} as of {escape(result.price_table.get('as_of', ''))} ({escape(result.price_table.get('purchase', ''))})</p>",
    ]
    if result.recommendation:
        parts.append(f"<h2>Recommendation</h2><p>{escape(result.recommendation.why)}</p><ul>")
        parts += [
            f"<li>{escape(r['label'])}: {escape(r['why'])}</li>" for r in result.recommendation.runners_up
        ]
        parts.append("</ul>")
    else:
        parts.append(
            "<h2>Recommendation</h2><p><span class='badge fail'>none</span> no configuration met the SLO</p>"
        )
    if result.verification:
        v = result.verification
        badge = (
            "<span class='badge pass'>verified</span>"
            if v.passed
            else "<span class='badge fail'>re-verification failed</span>"
        )
        parts.append(
            f"<h3>Re-verification at {v.rate_per_s:,.1f}/s per replica</h3><p>{badge} {escape(v.note)}</p>"
            f"<table><tr><th class='l'></th><th>predicted</th><th>measured</th></tr>"
            f"<tr><td class='l'>goodput/s</td><td>{v.predicted_goodput_per_s:,.1f}</td><td>{v.measured_goodput_per_s:,.1f}</td></tr>"
            f"<tr><td class='l'>p99</td><td>{_ms(v.predicted_p99_ms)}</td><td>{_ms(v.measured_p99_ms)}</td></tr></table>"
        )
    parts.append(
        f"<h2>Charts</h2><div class='charts'>{pareto_chart(result)}{capacity_chart(result)}{progress_chart(result)}</div>"
    )
    parts.append(f"<h2>Configurations, best first</h2>{ranked_table(result)}")
    hardware_rows = "".join(
        f"<tr><td class='l'>{escape(h.label)}</td><td class='l'>{','.join(map(str, h.cpus))}</td><td class='l'>{escape(h.instance_type)}</td>"
        f"<td>{_money(h.instance_price_per_h)}</td><td class='l'>{escape(h.mapping)}</td><td class='l'>{escape(h.memory_limit)}</td></tr>"
        for h in result.hardware
    )
    parts.append(
        "<h2>Hardware mapping</h2><table><tr><th class='l'>hardware</th><th class='l'>CPUs</th><th class='l'>instance</th>"
        f"<th>$/h</th><th class='l'>why</th><th class='l'>memory limit</th></tr>{hardware_rows}</table>"
    )
    if result.notes:
        parts.append(
            "<h2>Notes</h2><ul class='warnings'>"
            + "".join(f"<li>{escape(n)}</li>" for n in result.notes)
            + "</ul>"
        )
    parts.append(
        "<p class='muted'>Generated by modelfleet from a saved tune results file. Works offline.</p>"
    )
    return page(title, "".join(parts))


def write_tune_report(path: Path, out_html: Path) -> Path:
    result = read_result(path)
    return write_atomic(out_html, render_tune_page(path.name, result).encode("utf-8"))
