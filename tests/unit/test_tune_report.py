"""The tune page of `modelfleet report`: Pareto front, charts and tables from a saved result alone."""

from __future__ import annotations

from pathlib import Path

from tests.support.tune_results import tune_result, write

from modelfleet.cli.main import main
from modelfleet.tune.report import pareto_front, render_tune_page


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(5.0, 3.0), (2.0, 9.0), (3.0, 4.0), (4.0, 5.0), (8.0, 1.0), (3.0, 10.0)]
    assert pareto_front(points) == [(2.0, 9.0), (3.0, 4.0), (5.0, 3.0), (8.0, 1.0)]


def test_page_has_the_three_charts_the_ranking_and_the_recommendation() -> None:
    html = render_tune_page("tune-results.json", tune_result())
    assert html.count("<svg") == 3
    for title in ("per 1M conforming vs p99", "Capacity under the SLO per configuration", "Search progress"):
        assert title in html
    assert "Pareto front" in html and "★" in html and "meets the SLO at no rate tried" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_report_command_dispatches_tune_files(tmp_path: Path, capsys: object) -> None:
    results = write(tmp_path / "tune-results.json")
    out = tmp_path / "tune.html"
    try:
        main(["report", str(results), "-o", str(out)])
    except SystemExit as exc:  # typer exits 0 after a command
        assert exc.code in (0, None)
    assert "modelfleet tune" in out.read_text()
