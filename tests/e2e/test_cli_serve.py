"""`modelfleet serve` as a user runs it: bad input gives one line and a documented exit code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]


def _run(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELFLEET, *args], capture_output=True, text=True, timeout=timeout_s)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("serving ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_model_given_exits_2() -> None:
    result = _run("serve")
    assert result.returncode == 2
    assert "--model" in _one_line_error(result)


def test_missing_artifact_exits_3(tmp_path: Path) -> None:
    result = _run("serve", "--model", str(tmp_path / "nothing-here"), "--port", "0")
    assert result.returncode == 3
    assert "manifest.json is missing" in _one_line_error(result)


def _corrupt_copy(iris_artifact: Path, folder: Path) -> Path:
    broken = folder / "iris"
    shutil.copytree(iris_artifact, broken)
    model_file = broken / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    return broken


def test_workers_failing_on_a_corrupt_artifact_stop_the_server_with_its_exit_code(
    tmp_path: Path, iris_artifact: Path
) -> None:
    # A permanent error (integrity, exit 4) is not restarted: every worker would fail the same way. The
    # pool's metrics folder (made under TMPDIR) is removed on the way out.
    broken = _corrupt_copy(iris_artifact, tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [*MODELFLEET, "serve", "--model", str(broken), "--port", "0", "--workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "model.onnx" in result.stderr and "corrupt" in result.stderr
    assert "restarting in" not in result.stderr
    assert not list(scratch.glob("modelfleet-metrics-*"))


def test_corrupt_artifact_refuses_to_load_and_names_the_file(tmp_path: Path, iris_artifact: Path) -> None:
    broken = _corrupt_copy(iris_artifact, tmp_path)
    result = _run("serve", "--model", str(broken), "--port", "0")
    assert result.returncode == 4
    line = _one_line_error(result)
    assert "model.onnx" in line and "corrupt" in line


def test_malformed_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "serve.yaml"
    spec.write_text("models:\n  - path: x\n    batching: {max_delay_s: -1}\n")
    result = _run("serve", "--spec", str(spec))
    assert result.returncode == 2
    assert "models.0.batching.max_delay_s" in _one_line_error(result)
    spec.write_text("models: [\n")
    result = _run("serve", "--spec", str(spec))
    assert result.returncode == 2
    assert "not valid YAML" in _one_line_error(result)


def test_port_in_use_exits_2(iris_artifact: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("serve", "--model", str(iris_artifact), "--port", str(port))
    assert result.returncode == 2
    assert "cannot listen" in _one_line_error(result)
