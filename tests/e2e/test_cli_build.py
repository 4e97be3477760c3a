"""`modelfleet build` in a subprocess: success output, and every failure path as one line + exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tests.support.tree_models import write_tied_forest, write_xgboost_models

from modelfleet.manifest import read_manifest, verify_files

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]


def run_build(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MODELFLEET_DEBUG"}
    return subprocess.run(
        [*MODELFLEET, "build", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=240
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], exit_code: int, text: str) -> None:
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before, "a failed build left files behind"


@pytest.fixture(scope="module")
def iris_source(iris_artifact: Path) -> Path:
    """The .skops file the session's iris artifact was built from."""
    return iris_artifact.parent / "iris.skops"


def test_build_skops_prints_tables_and_writes_the_artifact(iris_source: Path, tmp_path: Path) -> None:
    result = run_build(iris_source, "-o", "out", "--name", "flowers", "--version", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "built flowers:3" in result.stdout
    for text in ("label_agreement", "max_abs_probability_diff", "probabilities", "model.onnx"):
        assert text in result.stdout
    manifest = read_manifest(tmp_path / "out")
    verify_files(tmp_path / "out", manifest)
    assert (manifest.name, manifest.version) == ("flowers", "3")


def test_bundled_model_builds_from_the_command_line(tmp_path: Path) -> None:
    result = run_build("--bundled", "-o", "minilm", "--json", "--optimization", "basic", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((tmp_path / "minilm" / "manifest.json").read_text())
    assert (manifest["name"], manifest["task"]) == ("all-MiniLM-L6-v2", "text-embedding")
    assert manifest["graph_optimization_level"] == "basic"
    assert manifest["verification"][0]["passed"] is True
    assert sorted(p.name for p in (tmp_path / "minilm").iterdir()) == [
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]


def test_missing_source_exits_3(tmp_path: Path) -> None:
    result = run_build(tmp_path / "nowhere.onnx", "-o", "out", cwd=tmp_path)
    assert_one_line_failure(result, 3, "does not exist")
    assert_nothing_written(tmp_path, set())


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_onnx_exits_2(kind: str, tmp_path: Path, iris_artifact: Path) -> None:
    source = tmp_path / "broken.onnx"
    good = (iris_artifact / "model.onnx").read_bytes()
    source.write_bytes(os.urandom(4096) if kind == "random" else good[: len(good) // 2])
    result = run_build(source, "-o", "out", cwd=tmp_path)
    assert_one_line_failure(result, 2, "broken.onnx")
    assert_nothing_written(tmp_path, {"broken.onnx"})


def test_corrupt_skops_exits_2(iris_source: Path, tmp_path: Path) -> None:
    source = tmp_path / "broken.skops"
    source.write_bytes(iris_source.read_bytes()[:300])
    result = run_build(source, "-o", "out", cwd=tmp_path)
    assert_one_line_failure(result, 2, "broken.skops is not a valid skops file")
    assert_nothing_written(tmp_path, {"broken.skops"})


def test_pickle_without_trust_exits_2(tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_bytes(b"\x80\x04K\x01.")  # a valid pickle of the int 1: never loaded without --trust-pickle
    result = run_build(source, "-o", "out", cwd=tmp_path)
    assert_one_line_failure(result, 2, "--trust-pickle")
    assert_nothing_written(tmp_path, {"model.pkl"})


def test_verification_failure_exits_4_and_leaves_nothing(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=500, random_state=0)
    source = tmp_path / "mlp.skops"
    skops.io.dump(make_pipeline(StandardScaler(), mlp).fit(features, labels), source)
    result = run_build(source, "-o", "out", "--precision", "int8", cwd=tmp_path)
    assert_one_line_failure(result, 4, "verification failed")
    assert_nothing_written(tmp_path, {"mlp.skops"})


def test_existing_output_exits_6_and_is_kept(iris_source: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    result = run_build(iris_source, "-o", "out", cwd=tmp_path)
    assert_one_line_failure(result, 6, "--force")
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    assert_nothing_written(tmp_path, {"out"})


def test_bad_option_exits_2(iris_source: Path, tmp_path: Path) -> None:
    result = run_build(iris_source, "-o", "out", "--precision", "fp16", cwd=tmp_path)
    assert_one_line_failure(result, 2, "precision")
    assert_nothing_written(tmp_path, set())


def test_optimize_of_a_non_transformer_exits_2_before_exporting(iris_source: Path, tmp_path: Path) -> None:
    result = run_build(iris_source, "-o", "out", "--optimize", cwd=tmp_path)
    assert_one_line_failure(result, 2, "--optimize works on Hugging Face transformer encoders")
    assert_nothing_written(tmp_path, set())


def test_no_source_exits_2(tmp_path: Path) -> None:
    assert_one_line_failure(run_build("-o", "out", cwd=tmp_path), 2, "--bundled")


def test_cuda_target_without_gpu_exits_5(iris_source: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA execution provider")
    result = run_build(iris_source, "-o", "out", "--target", "cuda", cwd=tmp_path)
    assert_one_line_failure(
        result, 5, "CUDA execution provider is not available on this machine (install onnxruntime-gpu)"
    )
    assert_nothing_written(tmp_path, set())


def _as_from_a_terminal() -> None:
    # Ctrl-C in a terminal reaches a program whose SIGINT is at its default. A test run started in the
    # background by a non-interactive shell (as CI may be) inherits SIGINT ignored, and Python then
    # rightly keeps ignoring it, so the child gets the terminal's disposition back explicitly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_build_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODELFLEET_DEBUG"}
    process = subprocess.Popen(
        [*MODELFLEET, "build", "--bundled", "-o", "out"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("out.tmp-*")):  # the build has started writing
            assert process.poll() is None and time.monotonic() < deadline, "build never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C)"
    assert "Traceback" not in stderr
    assert_nothing_written(tmp_path, set())


@pytest.mark.gpu
def test_cuda_target_builds_and_verifies_on_a_gpu(iris_source: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider (install onnxruntime-gpu on a CUDA machine)")
    result = run_build(iris_source, "-o", "out", "--target", "cuda", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["target"] == "cuda"
    assert all(check["passed"] for check in manifest["verification"])


def test_forest_below_the_label_agreement_exits_4_until_the_flag_accepts_it(tmp_path: Path) -> None:
    source = write_tied_forest(tmp_path / "forest.skops")
    before = {p.name for p in tmp_path.iterdir()}
    refused = run_build(source, "-o", "out", cwd=tmp_path)
    assert_one_line_failure(refused, 4, "label_agreement 0.984375 (threshold 1) over 64 samples")
    assert "pass --min-label-agreement 0.984 (now 1)" in refused.stderr
    assert_nothing_written(tmp_path, before)
    accepted = run_build(source, "-o", "out", "--min-label-agreement", "0.98", "--json", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    [labels, _] = json.loads(accepted.stdout)["verification"]
    assert (labels["metric"], labels["value"], labels["threshold"]) == ("label_agreement", 0.984375, 0.98)


def test_xgboost_model_prints_what_was_found_and_a_cut_lightgbm_file_exits_2(tmp_path: Path) -> None:
    sources = write_xgboost_models(tmp_path)
    built = run_build(sources["xgb-binary"], "-o", "xgb", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "found XGBoost binary:logistic model (20 trees)" in built.stdout
    assert read_manifest(tmp_path / "xgb").source.kind == "xgboost"
    cut = tmp_path / "cut.txt"
    cut.write_bytes(b"tree\nversion=v4\nnum_class=")
    assert_one_line_failure(run_build(cut, "-o", "lgb", cwd=tmp_path), 2, "is not a readable LightGBM model")
