"""`write_report(result_paths, out_html)`: one self-contained HTML file from saved results only.

Charts (inline SVG): throughput against latency percentiles across the sweep, latency over time
(p50/p99, corrected and uncorrected), throughput over time against the target, error rate over time.
Tables: run metadata, SLO verdicts, per-point figures, per-model figures, warnings. No JavaScript or
network access is needed to read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

import yaml

from modelfleet.bench.charts import PALETTE, Chart, Series, fmt_number, page, render
from modelfleet.bench.results import BenchResult, PointResult, WindowRaw, read_result
from modelfleet.fileio import write_atomic

_PASS = '<span class="badge pass">pass</span>'
_FAIL = '<span class="badge fail">FAIL</span>'
_SWEEP_PERCENTILES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p99_9_ms"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _window_x(point: PointResult, index: int, length_s: float) -> float:
    """Seconds from the run start to the middle of a window."""
    return point.started_offset_s + point.warmup_s + index * point.window_s + length_s / 2


def _steady_windows(point: PointResult) -> list[tuple[float, WindowRaw]]:
    # A trailing window shorter than half a window (the drain) would plot as a spike or a dip.
    return [
        (_window_x(point, w.index, w.length_s), w) for w in point.windows if w.length_s >= point.window_s / 2
    ]


def sweep_chart(results: Sequence[tuple[str, BenchResult]]) -> str:
    """Latency percentiles against throughput; with several runs, p50 (dashed) and p99 of each run."""
    several = len(results) > 1
    percentiles = [("p50", "p50_ms"), ("p99", "p99_ms")] if several else list(_SWEEP_PERCENTILES)
    series = []
    for run_number, (name, result) in enumerate(results):
        for number, (label, attr) in enumerate(percentiles):
            points = []
            for point in result.points:
                s = point.summary
                if s is None:
                    continue
                value = getattr(s.latency, attr)
                if value is not None:
                    points.append((s.throughput_per_s, value))
            if several:
                series.append(
                    Series(
                        f"{name} {label}",
                        points,
                        PALETTE[run_number % len(PALETTE)],
                        dashed=number == 0,
                        markers=True,
                    )
                )
            else:
                series.append(Series(label, points, PALETTE[number % len(PALETTE)], markers=True))
    latencies = [y for s in series for _, y in s.points]
    log_y = bool(latencies) and max(latencies) / max(min(latencies), 1e-9) > 30
    return render(
        Chart(
            "Latency percentiles against throughput (each marker a load point)",
            "throughput (responses/s)",
            "latency (ms)",
            series,
            log_y=log_y,
        )
    )


def _marks(result: BenchResult) -> list[tuple[float, str]]:
    if len(result.points) < 2:
        return []
    return [(p.started_offset_s + p.warmup_s, p.label) for p in result.points]


def latency_time_chart(result: BenchResult) -> str:
    specs = [
        ("p50", "p50_ms", 0, False),
        ("p99", "p99_ms", 1, False),
        ("p50 uncorrected", "uncorrected_p50_ms", 0, True),
        ("p99 uncorrected", "uncorrected_p99_ms", 1, True),
    ]
    open_loop = any(p.loop == "open" for p in result.points)
    series = []
    for name, attr, color, dashed in specs:
        if dashed and not open_loop:
            continue  # closed loop: the two figures are the same
        points = []
        for point in result.points:
            for x, window in _steady_windows(point):
                value = getattr(window, attr)
                if value is not None:
                    points.append((x, value))
        series.append(Series(name, points, PALETTE[color], dashed=dashed))
    values = [y for s in series for _, y in s.points]
    log_y = bool(values) and max(values) / max(min(values), 1e-9) > 30
    title = (
        "Latency over time (corrected: from intended send; dashed: from actual send)"
        if open_loop
        else "Latency over time"
    )
    return render(
        Chart(
            title,
            "seconds since run start",
            "latency (ms)",
            series,
            log_y=log_y,
            vertical_marks=_marks(result),
        )
    )


def throughput_time_chart(result: BenchResult) -> str:
    achieved, target = [], []
    for point in result.points:
        for x, window in _steady_windows(point):
            achieved.append((x, window.throughput_per_s))
            if point.target_rate_per_s is not None:
                target.append((x, point.target_rate_per_s))
    series = [Series("successful responses/s", achieved, PALETTE[2])]
    if target:
        series.append(Series("target arrival rate", target, PALETTE[7], dashed=True))
    return render(
        Chart(
            "Throughput over time",
            "seconds since run start",
            "responses/s",
            series,
            vertical_marks=_marks(result),
        )
    )


def error_time_chart(result: BenchResult) -> str:
    points = []
    for point in result.points:
        for x, window in _steady_windows(point):
            done = window.ok + window.errors
            points.append((x, 100.0 * window.errors / done if done else 0.0))
    return render(
        Chart(
            "Error rate over time",
            "seconds since run start",
            "errors (% of completed)",
            [Series("error rate", points, PALETTE[1])],
            vertical_marks=_marks(result),
        )
    )


def _badges(result: BenchResult) -> str:
    badges = [
        '<span class="badge pass">valid</span>'
        if result.valid
        else '<span class="badge fail">INVALID: generator fell behind</span>'
    ]
    if result.slo is not None:
        badges.append(
            '<span class="badge pass">SLO passed</span>'
            if result.slo.passed
            else '<span class="badge fail">SLO failed</span>'
        )
    if result.warnings:
        badges.append(f'<span class="badge warn">{len(result.warnings)} warning(s)</span>')
    return "".join(badges)


def _metadata(result: BenchResult) -> str:
    run = result.run
    rows = [
        ("run id", run.id + (f" (merged from {', '.join(run.sources)})" if run.sources else "")),
        ("target", run.target),
        ("protocol / mode", f"{run.protocol} / {run.mode}"),
        ("started / finished (UTC)", f"{run.started_at} / {run.finished_at}"),
        ("generators", f"{run.generators} process(es) on {len(run.machines)} machine(s)"),
        (
            "machines",
            "; ".join(
                f"{m.host}: {m.cpu_count} CPUs {m.cpu_model or ''}, {m.os}, Python {m.python}"
                for m in run.machines
            ),
        ),
        (
            "measurement",
            f"window {result.settings.window_s:g} s; stable when {result.settings.stability_windows} windows agree within "
            f"{result.settings.stability_tolerance:.0%}; late send > {result.settings.late_send_threshold_s * 1000:g} ms; "
            f"invalid above {result.settings.max_late_fraction:.1%} late; timeout {result.settings.timeout_s:g} s",
        ),
        ("modelfleet", run.modelfleet_version),
    ]
    body = "".join(f'<tr><th class="l">{escape(k)}</th><td class="l">{escape(v)}</td></tr>' for k, v in rows)
    models = ""
    if run.models:
        shown = run.models[:50]
        model_rows = "".join(
            f'<tr><td class="l">{escape(m.name)}</td><td class="l">{escape(", ".join(m.versions))}</td>'
            f'<td class="l">{escape(m.platform or "")}</td><td>{m.weight:g}</td></tr>'
            for m in shown
        )
        more = (
            f"<p class='muted'>… and {len(run.models) - 50} more models</p>" if len(run.models) > 50 else ""
        )
        models = (
            f'<h3>Models</h3><table><tr><th class="l">model</th><th class="l">versions</th><th class="l">platform</th>'
            f"<th>weight</th></tr>{model_rows}</table>{more}"
        )
    config = yaml.safe_dump(run.config, sort_keys=False) if run.config else ""
    details = (
        f"<details><summary>configuration</summary><pre>{escape(config)}</pre></details>" if config else ""
    )
    return f"<table>{body}</table>{models}{details}"


def _slo_table(result: BenchResult) -> str:
    if result.slo is None:
        return "<p class='muted'>No SLO gates were set (use --slo).</p>"
    labels = {p.index: p.label for p in result.points}
    rows = "".join(
        f'<tr><td class="l">{escape(v.gate)}</td><td class="l">{escape(labels.get(v.point, str(v.point)))}</td>'
        f"<td>{'-' if v.value is None else fmt_number(v.value)}</td>"
        f'<td class="l">{_PASS if v.passed else _FAIL}</td>'
        f'<td class="l">{escape(v.note)}</td></tr>'
        for v in result.slo.verdicts
    )
    return f'<table><tr><th class="l">gate</th><th class="l">point</th><th>measured</th><th class="l">verdict</th><th class="l">note</th></tr>{rows}</table>'


def _points_table(result: BenchResult) -> str:
    header = (
        "point",
        "sent",
        "sent/s",
        "ok",
        "error rate",
        "throughput/s",
        "goodput/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 uncorr. ms",
        "late sends",
        "capped",
        "client CPU",
        "stable",
    )
    rows = []
    for point in result.points:
        s = point.summary
        if s is None:
            continue
        error_text = ", ".join(f"{k}: {v}" for k, v in point.errors.items())
        cells = [
            f'<td class="l">{escape(point.label)}</td>',
            f"<td>{point.sent:,}</td>",
            f'<td title="target {point.target_rate_per_s or "-"}/s">{s.achieved_send_rate_per_s:,.1f}</td>',
            f"<td>{point.ok:,}</td>",
            f'<td title="{escape(error_text)}">{s.error_rate:.2%}</td>',
            f"<td>{s.throughput_per_s:,.1f}</td>",
            f"<td>{s.goodput_per_s:,.1f}</td>",
            f"<td>{_ms(s.latency.p50_ms)}</td>",
            f"<td>{_ms(s.latency.p90_ms)}</td>",
            f"<td>{_ms(s.latency.p95_ms)}</td>",
            f"<td>{_ms(s.latency.p99_ms)}</td>",
            f"<td>{_ms(s.latency.p99_9_ms)}</td>",
            f"<td>{_ms(s.latency.max_ms)}</td>",
            f"<td>{_ms(s.uncorrected_latency.p99_ms)}</td>",
            f"<td>{s.late_fraction:.2%}</td>",
            f"<td>{point.capped_sends:,}</td>",
            f"<td>{s.client_cpu_percent_max:.0f}%</td>",
            f'<td class="l" title="{escape(s.stability_note)}">{ {True: "yes", False: "no", None: "-"}[s.stable] }</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th class="{"l" if h == "point" else ""}">{escape(h)}</th>' for h in header)
    errors = [
        f"{escape(p.label)}: " + escape(", ".join(f"{k} {v:,}" for k, v in p.errors.items()))
        for p in result.points
        if p.errors
    ]
    error_list = "<p>Errors by kind — " + "; ".join(errors) + "</p>" if errors else ""
    note = (
        "<p class='muted'>Latency percentiles are over successful responses, from the intended send time in an open "
        "loop (coordinated-omission corrected). Goodput counts successful responses within the SLO latency limit.</p>"
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{error_list}{note}"


def _endpoints_table(result: BenchResult) -> str:
    sections = []
    for point in result.points:
        endpoints = [e for e in point.endpoints if e.sent]
        if len(endpoints) < 2 and result.run.mode != "seq":
            continue
        rows = "".join(
            f'<tr><td class="l">{escape(e.name)}</td><td>{e.sent:,}</td><td>{e.ok:,}</td>'
            f"<td>{sum(e.errors.values()):,}</td><td>{_ms(e.mean_ms)}</td><td>{_ms(e.p50_ms)}</td><td>{_ms(e.p99_ms)}</td></tr>"
            for e in endpoints[:200]
        )
        more = (
            f"<p class='muted'>… {len(endpoints) - 200} more in the results file</p>"
            if len(endpoints) > 200
            else ""
        )
        sections.append(
            f"<h3>Per model — {escape(point.label)}</h3><table><tr><th class='l'>model</th><th>sent</th><th>ok</th>"
            f"<th>errors</th><th>mean ms</th><th>p50 ms</th><th>p99 ms</th></tr>{rows}</table>{more}"
        )
    return "".join(sections)


def result_section(name: str, result: BenchResult, include_sweep: bool) -> str:
    warnings = "".join(f"<li>{escape(w)}</li>" for w in result.warnings)
    charts = [sweep_chart([(name, result)])] if include_sweep else []
    charts += [latency_time_chart(result), throughput_time_chart(result), error_time_chart(result)]
    return (
        f"<h2>{escape(name)} {_badges(result)}</h2>"
        f"<h3>Points</h3>{_points_table(result)}"
        f"<h3>SLO gates</h3>{_slo_table(result)}"
        + (f"<h3>Warnings</h3><ul class='warnings'>{warnings}</ul>" if warnings else "")
        + f"<h3>Charts</h3><div class='charts'>{''.join(charts)}</div>"
        f"{_endpoints_table(result)}<h3>Run</h3>{_metadata(result)}"
    )


def render_report(results: Sequence[tuple[str, BenchResult]]) -> str:
    """The HTML page for one or more named results."""
    if len(results) == 1:
        name, result = results[0]
        title = f"modelfleet bench — {result.run.target} ({result.run.mode})"
        body = f"<h1>{escape(title)}</h1><p class='muted'>{escape(name)} · run {escape(result.run.id)} · {escape(result.run.started_at)}</p>"
        body += result_section(name, result, include_sweep=True)
    else:
        title = f"modelfleet bench — {len(results)} runs"
        body = f"<h1>{escape(title)}</h1><div class='charts'>{sweep_chart(results)}</div>"
        body += "".join(result_section(name, result, include_sweep=False) for name, result in results)
    body += (
        "<p class='muted'>Generated by modelfleet from saved results (schema version 1). Works offline.</p>"
    )
    return page(title, body)


def write_report(result_paths: Sequence[Path | str], out_html: Path | str) -> Path:
    """Read results files and write one self-contained HTML report; returns the path written."""
    paths = [Path(p) for p in result_paths]
    results = [(path.name, read_result(path)) for path in paths]
    html = render_report(results)
    return write_atomic(out_html, html.encode("utf-8"))
