"""`modelfleet drift report`: HTML with inline charts from the monitor's history, JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelfleet.cli.main import main
from modelfleet.config.drift import DriftConfig
from modelfleet.drift.detect import assess
from modelfleet.drift.monitor import append_history, history_file
from modelfleet.drift.report import drift_summary, render_drift_report
from modelfleet.drift.sampling import Window
from modelfleet.fleet.state import FleetPaths, FleetState, write_state


@pytest.fixture
def fleet(tmp_path: Path) -> FleetPaths:
    paths = FleetPaths(tmp_path / "demo")
    paths.root.mkdir()
    write_state(
        paths,
        FleetState(
            fleet="demo",
            spec_path="s",
            state_dir=str(paths.root),
            router_url="http://127.0.0.1:9",
            models=["iris"],
            created_at=0,
            updated_at=0,
            processes=[],
        ),
    )
    rng = np.random.default_rng(0)
    reference = Window(
        {"input": rng.normal(size=(300, 2))}, {"label": rng.integers(0, 3, 300)}, np.zeros(300)
    )
    for step, shift in enumerate((0.0, 0.0, 1.0)):
        window = Window(
            {"input": rng.normal(shift, 1, size=(200, 2))}, {"label": rng.integers(0, 3, 200)}, np.zeros(200)
        )
        append_history(
            history_file(paths.drift_dir, "iris"),
            assess("iris", 1, reference, window, DriftConfig(), now=1000.0 + 60 * step),
        )
    return paths


def test_html_has_histograms_and_scores_over_time_with_nothing_external(fleet: FleetPaths) -> None:
    summary = drift_summary(fleet, "iris")
    assert summary["assessments"] == 3 and summary["drifted_assessments"] == 1
    html = render_drift_report(summary)
    assert "<b>drifted</b>" in html and "Scores over time" in html
    assert html.count("<svg") == 1 + 3  # one p-value chart, three feature histograms (2 inputs, label)
    assert "input:input[1] (ks)" in html and "PSI" in html and "current window" in html
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_cli_json_and_errors(fleet: FleetPaths, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = str(fleet.root.parent)
    with pytest.raises(SystemExit) as done:
        main(["drift", "report", "demo", "iris", "--json", "--state-dir", state_dir])
    assert done.value.code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["last"]["drifted"] is True and len(document["history"]) == 3
    for fleet_name, model, text in (
        ("demo", "nope", "fleet demo has no model 'nope' (models: iris)"),
        ("gone", "iris", "fleet 'gone' has no local state"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["drift", "report", fleet_name, model, "--state-dir", state_dir])
        assert exited.value.code == 3
        assert text in capsys.readouterr().err.replace("\n", "")
