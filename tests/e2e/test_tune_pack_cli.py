"""`modelfleet tune --pack`: several models' tune results on shared nodes, from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import tune_results

from modelfleet.tune.results import write_result


def _two_models(tmp_path: Path) -> list[Path]:
    a = tune_results.write(tmp_path / "a.json", tune_results.tune_result(target=1000.0))
    other = tune_results.tune_result(target=200.0)
    for trial in other.trials:
        trial.model_name = "other"
    write_result(other, tmp_path / "b.json")
    return [a, tmp_path / "b.json"]


def test_cli_pack_prints_json(tmp_path: Path) -> None:
    paths = _two_models(tmp_path)
    command = [
        sys.executable,
        "-m",
        "modelfleet.cli.main",
        "tune",
        "--json",
        "--instance-type",
        "c7i.2xlarge",
    ]
    for path in paths:
        command += ["--pack", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["instance_type"] == "c7i.2xlarge" and len(summary["models"]) == 2


def test_cli_pack_of_an_unknown_node_type_is_one_line_and_exit_2(tmp_path: Path) -> None:
    paths = _two_models(tmp_path)
    command = [
        sys.executable,
        "-m",
        "modelfleet.cli.main",
        "tune",
        "--pack",
        str(paths[0]),
        "--instance-type",
        "x1.nope",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "unknown instance type 'x1.nope'" in done.stderr
