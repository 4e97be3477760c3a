"""Small real bench results: points whose requests had exactly the given latencies."""

from __future__ import annotations

from modelfleet.bench import stats
from modelfleet.bench.merge import point_label
from modelfleet.bench.results import BenchResult, PointRaw, RunInfo, Settings, WindowRaw
from modelfleet.bench.summary import finalize

SETTINGS = Settings(
    window_s=1.0,
    stability_windows=3,
    stability_tolerance=0.1,
    late_send_threshold_s=0.002,
    max_late_fraction=0.01,
    timeout_s=10.0,
)


def synthetic_point(
    index: int, latencies_ms: list[float], rate_per_s: float = 100.0, window_s: float = 1.0
) -> PointRaw:
    """A point whose requests had exactly these latencies, spread evenly over windows of ``window_s``."""
    per_window = max(int(rate_per_s * window_s), 1)
    windows = []
    total = stats.new_histogram()
    for number, start in enumerate(range(0, len(latencies_ms), per_window)):
        histogram = stats.new_histogram()
        for value in latencies_ms[start : start + per_window]:
            stats.record_s(histogram, value / 1000.0)
        total = stats.add_into(total, histogram)
        windows.append(
            WindowRaw(
                index=number,
                length_s=window_s,
                ok=histogram.get_total_count(),
                corrected=stats.encode(histogram),
                uncorrected=stats.encode(histogram),
            )
        )
    duration = len(windows) * window_s
    return PointRaw(
        index=index,
        label=point_label("open", rate_per_s, None),
        loop="open",
        arrival="constant",
        target_rate_per_s=rate_per_s,
        started_offset_s=index * (duration + 1.0),
        warmup_s=1.0,
        send_s=duration,
        measured_s=duration,
        window_s=window_s,
        stop_reason="duration",
        scheduled=len(latencies_ms),
        sent=len(latencies_ms),
        ok=len(latencies_ms),
        corrected=stats.encode(total),
        uncorrected=stats.encode(total),
        windows=windows,
    )


def synthetic_result(points: list[PointRaw], slo: str | None = None, run_id: str = "run0") -> BenchResult:
    from modelfleet.bench.slo import parse_slo

    finished, slo_report, valid, warnings = finalize(points, SETTINGS, parse_slo(slo))
    run = RunInfo(
        id=run_id,
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:01:00Z",
        modelfleet_version="test",
        target="http://127.0.0.1:1",
        protocol="v2",
        mode="open",
        generators=1,
    )
    return BenchResult(
        run=run, settings=SETTINGS, points=finished, slo=slo_report, valid=valid, warnings=warnings
    )
