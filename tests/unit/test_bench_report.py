"""HTML report and comparison: one self-contained file from saved results, with the charts and verdicts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.support.bench_results import synthetic_point, synthetic_result

from modelfleet.bench import write_result
from modelfleet.bench.charts import nice_ticks
from modelfleet.bench.compare import compare_results, write_compare_html
from modelfleet.bench.report import write_report


def _sweep(scale: float, run_id: str) -> object:
    points = [
        synthetic_point(i, [scale * (5.0 + i * 30 + (j % 20)) for j in range(rate * 3)], rate_per_s=rate)
        for i, rate in enumerate((100, 200, 400))
    ]
    return synthetic_result(points, slo="p99<60ms", run_id=run_id)


def _assert_self_contained(html: str) -> None:
    assert "<script src" not in html and "<link" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    assert "@import" not in html


def test_report_has_charts_tables_and_verdicts(tmp_path: Path) -> None:
    result = _sweep(1.0, "r1")
    write_result(result, tmp_path / "r1.json")  # type: ignore[arg-type]
    out = write_report([tmp_path / "r1.json"], tmp_path / "report.html")
    html = out.read_text()
    _assert_self_contained(html)
    assert html.count("<svg") == 4  # sweep, latency over time, throughput over time, error rate
    for text in (
        "Latency percentiles against throughput",
        "Latency over time",
        "Throughput over time",
        "Error rate over time",
        "rate 400/s",
        "p99&lt;60ms",
        "FAIL",
        "pass",
        "r1",
    ):
        assert text in html
    assert "polyline" in html


def test_report_of_several_runs_overlays_their_sweeps(tmp_path: Path) -> None:
    for name, scale in (("a.json", 1.0), ("b.json", 2.0)):
        write_result(_sweep(scale, name), tmp_path / name)  # type: ignore[arg-type]
    html = write_report([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "both.html").read_text()
    _assert_self_contained(html)
    assert "a.json p99" in html and "b.json p99" in html


def test_compare_marks_changes_beyond_the_noise_band(tmp_path: Path) -> None:
    a, b = _sweep(1.0, "a"), _sweep(2.0, "b")
    rows = {(r.point, r.metric): r for r in compare_results(a, b)}  # type: ignore[arg-type]
    p99 = rows[("rate 100/s", "p99")]
    assert p99.change == pytest.approx(1.0, rel=0.01) and p99.better is False
    throughput = rows[("rate 100/s", "throughput")]
    assert throughput.change == pytest.approx(0.0) and throughput.better is None
    html = write_compare_html(a, b, tmp_path / "cmp.html", names=("a", "b")).read_text()  # type: ignore[arg-type]
    _assert_self_contained(html)
    assert html.count("<svg") == 3 and "+100.0%" in html


def test_nice_ticks() -> None:
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 0.9)[-1] >= 0.9
