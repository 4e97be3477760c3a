"""Derive a point's figures (percentiles, throughput, goodput, stability, validity) from its raw data.

Pure functions of saved data, used right after a run and again after every merge.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelfleet.bench import stats
from modelfleet.bench.results import (
    EndpointRaw,
    LatencyStats,
    PointRaw,
    PointResult,
    PointSummary,
    Settings,
    SloReport,
    WindowRaw,
)
from modelfleet.bench.slo import Gate, evaluate, goodput_limit_ms

# A generator process above this CPU share is saturated: its event loop may delay sends and reads.
CPU_SATURATION_PERCENT = 90.0


def latency_stats(summary: stats.LatencySummary) -> LatencyStats:
    p = summary.percentiles_ms
    return LatencyStats(
        count=summary.count,
        min_ms=summary.min_ms,
        mean_ms=summary.mean_ms,
        max_ms=summary.max_ms,
        p50_ms=p["p50"],
        p90_ms=p["p90"],
        p95_ms=p["p95"],
        p99_ms=p["p99"],
        p99_9_ms=p["p99.9"],
        thin_percentiles=list(summary.thin_percentiles),
    )


def derive_window(window: WindowRaw) -> WindowRaw:
    corrected = stats.summarize(stats.decode(window.corrected)) if window.corrected else None
    uncorrected = stats.summarize(stats.decode(window.uncorrected)) if window.uncorrected else None
    return window.model_copy(
        update={
            "throughput_per_s": window.ok / window.length_s if window.length_s > 0 else 0.0,
            "p50_ms": corrected.percentiles_ms["p50"] if corrected else None,
            "p99_ms": corrected.percentiles_ms["p99"] if corrected else None,
            "uncorrected_p50_ms": uncorrected.percentiles_ms["p50"] if uncorrected else None,
            "uncorrected_p99_ms": uncorrected.percentiles_ms["p99"] if uncorrected else None,
        }
    )


def derive_endpoint(endpoint: EndpointRaw) -> EndpointRaw:
    summary = stats.summarize(stats.decode(endpoint.latency)) if endpoint.latency else None
    return endpoint.model_copy(
        update={
            "p50_ms": summary.percentiles_ms["p50"] if summary else None,
            "p99_ms": summary.percentiles_ms["p99"] if summary else None,
            "mean_ms": round(endpoint.latency_sum_s * 1000.0 / endpoint.ok, 4) if endpoint.ok else None,
        }
    )


def full_windows(point: PointRaw) -> list[WindowRaw]:
    """Windows entirely inside the send phase: the drain after it is not steady load."""
    return [w for w in point.windows if (w.index + 1) * point.window_s <= point.send_s + 1e-9]


def summarize_point(point: PointRaw, settings: Settings, goodput_limit_ms: float | None) -> PointSummary:
    corrected = stats.decode(point.corrected)
    uncorrected = stats.decode(point.uncorrected)
    latency = stats.summarize(corrected)
    failed = sum(point.errors.values())
    completed = point.ok + failed
    measured_s = point.measured_s if point.measured_s > 0 else 1e-9
    if goodput_limit_ms is None:
        good = point.ok
    else:
        good = stats.count_at_or_below_s(corrected, goodput_limit_ms / 1000.0)
    windows = full_windows(point)
    stability = stats.check_stability(
        [w.throughput_per_s for w in windows],
        [w.p99_ms for w in windows],
        settings.stability_windows,
        settings.stability_tolerance,
    )
    late_fraction = point.late_sends / point.sent if point.sent else 0.0
    cpu_max = max((g.cpu_percent for g in point.generators), default=0.0)
    valid = late_fraction <= settings.max_late_fraction
    warnings = _warnings(point, settings, latency, late_fraction, cpu_max, valid)
    return PointSummary(
        throughput_per_s=point.ok / measured_s,
        goodput_per_s=good / measured_s,
        goodput_limit_ms=goodput_limit_ms,
        achieved_send_rate_per_s=point.sent / point.send_s if point.send_s > 0 else 0.0,
        error_rate=failed / completed if completed else 0.0,
        late_fraction=late_fraction,
        latency=latency_stats(latency),
        uncorrected_latency=latency_stats(stats.summarize(uncorrected)),
        stable=stability.stable,
        stability_note=stability.note,
        client_cpu_percent_max=cpu_max,
        valid=valid,
        warnings=warnings,
    )


def _warnings(
    point: PointRaw,
    settings: Settings,
    latency: stats.LatencySummary,
    late_fraction: float,
    cpu_max: float,
    valid: bool,
) -> list[str]:
    warnings = []
    if not valid:
        warnings.append(
            f"INVALID: {point.late_sends} of {point.sent} sends ({late_fraction:.1%}) left more than "
            f"{settings.late_send_threshold_s * 1000:g} ms late (limit {settings.max_late_fraction:.1%}); "
            "the generator fell behind, add --procs or generator machines"
        )
    if cpu_max >= CPU_SATURATION_PERCENT:
        warnings.append(
            f"a generator process used {cpu_max:.0f}% CPU: it is saturated, results may understate the target"
        )
    if latency.thin_percentiles:
        thin = ", ".join(latency.thin_percentiles)
        warnings.append(f"only {latency.count} successful samples: {thin} need more (p99 needs 1,000)")
    if point.capped_sends:
        warnings.append(
            f"{point.capped_sends} sends waited for the in-flight cap: the target fell behind the offered load "
            "(corrected latency includes the wait)"
        )
    if point.loop == "open" and point.target_rate_per_s and point.sent:
        expected = point.target_rate_per_s * point.send_s
        if point.stop_reason == "duration" and point.sent < 0.9 * expected:
            warnings.append(f"sent {point.sent} requests where the rate called for about {expected:.0f}")
    return warnings


def finalize(
    raw_points: Sequence[PointRaw], settings: Settings, gates: Sequence[Gate]
) -> tuple[list[PointResult], SloReport | None, bool, list[str]]:
    """Derived figures for every point, SLO verdicts, overall validity and run-level warnings."""
    limit_ms = goodput_limit_ms(gates)
    points = []
    for raw in raw_points:
        data = raw.model_dump(exclude={"summary"})
        data["windows"] = [derive_window(w) for w in raw.windows]
        data["endpoints"] = [derive_endpoint(e) for e in raw.endpoints]
        point = PointResult.model_validate({**data, "summary": None})
        point.summary = summarize_point(point, settings, limit_ms)
        points.append(point)
    slo = evaluate(gates, [(p.index, p.summary) for p in points if p.summary is not None]) if gates else None
    valid = all(p.summary is not None and p.summary.valid for p in points)
    warnings = [f"{p.label}: {w}" for p in points if p.summary is not None for w in p.summary.warnings]
    return points, slo, valid, warnings
