"""`modelfleet build` of PyTorch sources in a subprocess: what it found, and each refusal as one line + exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.e2e.test_cli_build import assert_nothing_written, assert_one_line_failure, run_build
from tests.support import torch_mlp

from modelfleet.manifest import read_manifest

MLP_FILE = Path(torch_mlp.__file__).resolve()


@pytest.fixture
def sources(torch_sources: Path, tmp_path: Path) -> Path:
    """The session's TorchScript, torch.save and examples files, copied into the test's own folder."""
    for name in ("mlp.pt", "pickled.pt", "examples.npz"):
        shutil.copy(torch_sources / name, tmp_path / name)
    return tmp_path


def test_torchscript_file_builds_and_says_what_it_found(sources: Path) -> None:
    result = run_build(
        "mlp.pt", "-o", "out", "--samples", "examples.npz", "--max-relative-diff", "0.001", cwd=sources
    )
    assert result.returncode == 0, result.stderr
    assert "found TorchScript file" in result.stdout
    for text in ("max_abs_diff[scores]", "label_agreement[label]", "features", "extra"):
        assert text in result.stdout
    manifest = read_manifest(sources / "out")
    assert manifest.source.kind == "torch" and manifest.extra["max_relative_diff"] == 0.001
    assert manifest.verification[0].threshold >= 0.001


def test_module_function_source_is_refused_without_trust_code(sources: Path) -> None:
    before = {p.name for p in sources.iterdir()}
    result = run_build(f"{MLP_FILE}:make_model", "-o", "out", "--samples", "examples.npz", cwd=sources)
    assert_one_line_failure(result, 2, "which runs its code: pass --trust-code if you trust it")
    assert_nothing_written(sources, before)


def test_pytorch_source_without_example_inputs_is_refused(sources: Path) -> None:
    before = {p.name for p in sources.iterdir()}
    result = run_build(f"{MLP_FILE}:make_model", "-o", "out", "--trust-code", cwd=sources)
    assert_one_line_failure(result, 2, "needs example inputs: pass --samples FILE.npz")
    assert_nothing_written(sources, before)


def test_plain_torch_save_pickle_is_refused(sources: Path) -> None:
    before = {p.name for p in sources.iterdir()}
    result = run_build("pickled.pt", "-o", "out", "--samples", "examples.npz", cwd=sources)
    assert_one_line_failure(result, 2, "pickled.pt is not a TorchScript file")
    assert "torch.jit.save(torch.jit.script(model)" in result.stderr
    assert_nothing_written(sources, before)


def test_output_v2_cannot_carry_is_refused_by_name(sources: Path) -> None:
    before = {p.name for p in sources.iterdir()}
    result = run_build(
        f"{MLP_FILE}:make_nested_model", "-o", "out", "--samples", "examples.npz", "--trust-code", cwd=sources
    )
    assert_one_line_failure(
        result,
        2,
        "output 'aux' is a list of lists; V2 carries flat tensors: return a tuple or dict of tensors",
    )
    assert_nothing_written(sources, before)


def test_a_module_no_exporter_can_export_fails_in_one_line(sources: Path) -> None:
    """Both exporters' reasons in one line; the TorchScript exporter's native graph dump stays hidden."""
    before = {p.name for p in sources.iterdir()}
    result = run_build(
        f"{MLP_FILE}:make_bucket_model", "-o", "out", "--samples", "examples.npz", "--trust-code", cwd=sources
    )
    assert_one_line_failure(result, 2, f"cannot export {MLP_FILE}:make_bucket_model to ONNX (torchscript: ")
    assert "torchscript: Exporting the operator 'aten::searchsorted'" in result.stderr
    assert "; dynamo: " in result.stderr and "Torch IR graph" not in result.stderr
    assert_nothing_written(sources, before)
