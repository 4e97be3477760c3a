"""`modelfleet review` in a subprocess: exit 1 with a HIGH risk left, 0 without; JSON and lens written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "review", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_review_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    guidance = _run(
        "tests/fixtures/guidance",
        "--format",
        "json",
        "-o",
        str(tmp_path / "r.json"),
        "--export-lens",
        str(tmp_path / "lens.json"),
    )
    assert guidance.returncode == 1, guidance.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["kind"] == "modelfleet.review.result" and document["schema_version"] == 1
    assert json.loads((tmp_path / "lens.json").read_text())["schemaVersion"] == "2021-11-01"
    eks = _run("examples/fleet-eks-guidance.yaml")
    assert eks.returncode == 0, eks.stdout + eks.stderr
    # Bad input (one-line errors, exit codes 2, 3, 5, 7) is tested in process: tests/unit/test_review_cli.py.
