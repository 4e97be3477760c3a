"""PyTorch sources (module:function and TorchScript) built, served by a real server and compared with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tests.support import torch_mlp
from tests.support.servers import serve

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.errors import VerificationFailed
from modelfleet.manifest import Manifest, read_manifest, verify_files

ENTRY = "tests.support.torch_mlp:make_model"


@pytest.fixture(scope="module")
def torch_artifacts(torch_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The MLP built twice: from its code (module:function) and from its TorchScript file."""
    folder = tmp_path_factory.mktemp("torch-artifacts")
    samples = torch_sources / "examples.npz"
    build_artifact(
        ENTRY, folder / "mlp-code", BuildOptions(name="mlp-code", samples=samples, trust_code=True)
    )
    build_artifact(
        torch_sources / "mlp.pt", folder / "mlp-script", BuildOptions(name="mlp-script", samples=samples)
    )
    return {"code": folder / "mlp-code", "script": folder / "mlp-script"}


def _describe(manifest: Manifest) -> list[tuple[str, str, list[int]]]:
    return [(f.name, f.datatype.value, f.shape) for f in (*manifest.inputs, *manifest.outputs)]


@pytest.mark.parametrize(
    ("which", "detected", "torch_source"),
    [
        ("code", f"PyTorch module {ENTRY}", f"module:function {ENTRY}"),
        ("script", "TorchScript file", "TorchScript"),
    ],
)
def test_manifest_names_inputs_outputs_and_verification(
    torch_artifacts: dict[str, Path], which: str, detected: str, torch_source: str
) -> None:
    manifest = read_manifest(torch_artifacts[which])
    verify_files(torch_artifacts[which], manifest)
    assert (manifest.task, manifest.source.kind, manifest.extra["detected"]) == ("generic", "torch", detected)
    assert manifest.extra["torch_source"] == torch_source
    assert (manifest.extra["exporter"], manifest.extra["onnx_opset"]) == ("torchscript", 17)
    assert _describe(manifest) == [
        ("features", "FP32", [-1, 6]),
        ("extra", "FP32", [-1, 2]),
        ("scores", "FP32", [-1, 3]),
        ("label", "INT64", [-1]),
    ]
    scores, label = manifest.verification
    assert (scores.metric, label.metric) == ("max_abs_diff[scores]", "label_agreement[label]")
    assert scores.passed and label.passed and scores.samples == 12
    examples = torch_mlp.example_inputs()
    with torch.no_grad():
        reference = torch_mlp.make_model()(**{k: torch.from_numpy(v) for k, v in examples.items()})
    assert scores.threshold == pytest.approx(1e-4 * max(1.0, float(reference["scores"].abs().max())))
    assert {"max_abs_diff_whole_file", "max_abs_diff_batch_1"} <= set(scores.details)
    if which == "code":  # the module file is what the manifest fingerprints
        assert manifest.source.path == str(Path(torch_mlp.__file__).resolve())


def test_both_artifacts_serve_what_torch_computes(torch_artifacts: dict[str, Path], tmp_path: Path) -> None:
    inputs = torch_mlp.example_inputs(rows=5, seed=99)  # not the build's examples: another batch size
    with torch.no_grad():
        expected = torch_mlp.make_model()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    models = ["--model", str(torch_artifacts["code"]), "--model", str(torch_artifacts["script"])]
    with serve(models, tmp_path) as server:
        client = triton.InferenceServerClient(server.address)
        metadata = client.get_model_metadata("mlp-script")
        assert [(i["name"], i["shape"]) for i in metadata["inputs"]] == [
            ("features", [-1, 6]),
            ("extra", [-1, 2]),
        ]
        for name in ("mlp-code", "mlp-script"):
            tensors = []
            for key, value in inputs.items():
                tensor = triton.InferInput(key, list(value.shape), "FP32")
                tensor.set_data_from_numpy(value)
                tensors.append(tensor)
            result = client.infer(name, tensors)
            np.testing.assert_allclose(
                result.as_numpy("scores"), expected["scores"].numpy(), rtol=1e-5, atol=1e-5
            )
            np.testing.assert_array_equal(result.as_numpy("label"), expected["label"].numpy())


def test_a_graph_that_froze_a_branch_fails_row_by_row_verification(
    torch_sources: Path, tmp_path: Path
) -> None:
    options = BuildOptions(samples=torch_sources / "examples.npz", trust_code=True)
    with pytest.raises(VerificationFailed, match=r"max_abs_diff\[output_0\]"):
        build_artifact("tests.support.torch_mlp:make_branchy_model", tmp_path / "branchy", options)
    assert not (tmp_path / "branchy").exists()


def test_an_operator_torchscript_cannot_export_falls_back_to_dynamo(
    torch_sources: Path, tmp_path: Path
) -> None:
    options = BuildOptions(samples=torch_sources / "examples.npz", trust_code=True)
    manifest = build_artifact("tests.support.torch_mlp:make_rms_model", tmp_path / "rms", options)
    assert (manifest.extra["exporter"], manifest.extra["onnx_opset"]) == ("dynamo", 18)
    assert [(f.name, f.shape) for f in manifest.outputs] == [("normed", [-1, 3])]
    [check] = manifest.verification
    assert check.metric == "max_abs_diff[normed]" and check.passed
