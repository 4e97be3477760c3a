"""`modelfleet review` in a subprocess: exit codes and one-line errors for bad input."""

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
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("name: Bad_Name\nmodels: []\n")
    other = tmp_path / "results"
    other.mkdir()
    (other / "x.json").write_text('{"hello": 1}')
    for args, code in (
        ((str(bad_spec),), 2),
        (("examples/fleet-eks-guidance.yaml", "--results", str(other)), 2),
        (("examples/fleet-eks-guidance.yaml", "--live"), 2),  # no local fleet state for it
    ):
        done = _run(*args)
        assert done.returncode == code, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
