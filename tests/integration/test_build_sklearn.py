"""scikit-learn sources built into artifacts and compared with scikit-learn on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import skops.io
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.errors import InvalidInput, VerificationFailed
from modelfleet.manifest import read_manifest, verify_files


def _run(artifact: Path, rows: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    manifest = read_manifest(artifact)
    session = ort.InferenceSession(str(artifact / manifest.model_file), providers=["CPUExecutionProvider"])
    graph_outputs = {f.name: f.onnx_name or f.name for f in manifest.outputs}
    values = session.run(list(graph_outputs.values()), {"input": rows.astype(np.float32)})
    return dict(zip(graph_outputs, values, strict=True))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_iris_artifact_matches_scikit_learn_on_the_iris_data(iris_artifact: Path) -> None:
    manifest = read_manifest(iris_artifact)
    assert (manifest.name, manifest.task, manifest.source.kind) == ("iris", "classification", "sklearn")
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.inputs] == [("input", "FP32", [-1, 4])]
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]
    verify_files(iris_artifact, manifest)
    assert {v.metric: v.passed for v in manifest.verification} == {
        "label_agreement": True,
        "max_abs_probability_diff": True,
    }
    features, labels = load_iris(return_X_y=True)
    model = skops.io.load(iris_artifact.parent / "iris.skops")
    got = _run(iris_artifact, features)
    np.testing.assert_array_equal(got["label"], model.predict(features.astype(np.float32)))
    np.testing.assert_allclose(
        got["probabilities"], model.predict_proba(features.astype(np.float32)), atol=1e-4
    )
    assert float(np.mean(got["label"] == labels)) > 0.95


def test_pickle_source_builds_only_when_trusted(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    source = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(features, labels), source)
    with pytest.raises(InvalidInput, match="--trust-pickle"):
        build_artifact(source, tmp_path / "refused", BuildOptions())
    assert not (tmp_path / "refused").exists()
    manifest = build_artifact(source, tmp_path / "trusted", BuildOptions(trust_pickle=True))
    assert manifest.extra["source_format"] == "pickle"
    assert all(v.passed for v in manifest.verification)
    assert _leftovers(tmp_path) == []


def test_regressor_outputs_prediction(tmp_path: Path) -> None:
    features, targets = load_diabetes(return_X_y=True)
    source = tmp_path / "diabetes.skops"
    skops.io.dump(Ridge(alpha=0.5).fit(features, targets), source)
    manifest = build_artifact(source, tmp_path / "diabetes", BuildOptions())
    assert manifest.task == "regression"
    assert [(f.name, f.datatype.value, f.shape, f.onnx_name) for f in manifest.outputs] == [
        ("prediction", "FP32", [-1, 1], "variable")
    ]
    [check] = manifest.verification
    assert check.metric == "max_abs_prediction_diff" and check.passed
    model = skops.io.load(source)
    got = _run(tmp_path / "diabetes", features)["prediction"]
    np.testing.assert_allclose(got[:, 0], model.predict(features.astype(np.float32)), rtol=1e-4, atol=1e-3)


def test_string_labels_become_a_bytes_output(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    source = tmp_path / "named.skops"
    skops.io.dump(LogisticRegression(max_iter=1000).fit(features, names), source)
    manifest = build_artifact(source, tmp_path / "named", BuildOptions())
    assert manifest.outputs[0].datatype.value == "BYTES"
    assert manifest.extra["classes"] == ["setosa", "versicolor", "virginica"]
    got = _run(tmp_path / "named", features[:5])["label"]
    assert [str(v) for v in got] == ["setosa"] * 5


def test_csv_samples_replace_the_generated_ones(tmp_path: Path, iris_artifact: Path) -> None:
    samples = tmp_path / "samples.csv"
    features, _ = load_iris(return_X_y=True)
    np.savetxt(samples, features[::10], delimiter=",", header="a,b,c,d", comments="")
    options = BuildOptions(samples=samples, name="iris-custom")
    manifest = build_artifact(iris_artifact.parent / "iris.skops", tmp_path / "iris", options)
    assert {v.samples for v in manifest.verification} == {15}
    assert manifest.extra["verification_samples"] == "custom"


def test_onnx_file_made_with_skl2onnx_builds(iris_artifact: Path, tmp_path: Path) -> None:
    manifest = build_artifact(
        iris_artifact / "model.onnx", tmp_path / "from-onnx", BuildOptions(name="iris-onnx")
    )
    assert (manifest.task, manifest.source.kind) == ("generic", "onnx")
    assert [(f.name, f.datatype.value) for f in manifest.outputs] == [
        ("label", "INT64"),
        ("probabilities", "FP32"),
    ]
    assert [v.metric for v in manifest.verification] == [
        "label_agreement[label]",
        "min_cosine_similarity[probabilities]",
    ]
    assert all(v.passed for v in manifest.verification)


def test_int8_that_changes_probabilities_fails_verification_and_writes_nothing(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=500, random_state=0)
    source = tmp_path / "mlp.skops"
    skops.io.dump(make_pipeline(StandardScaler(), mlp).fit(features, labels), source)
    output = tmp_path / "mlp-int8"
    with pytest.raises(VerificationFailed, match=r"max_abs_probability_diff .* \(threshold 0.0001\)"):
        build_artifact(source, output, BuildOptions(precision="int8"))
    assert not output.exists()
    assert _leftovers(tmp_path) == []


def test_int8_of_a_graph_without_weights_is_refused(iris_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no MatMul with constant weights"):
        build_artifact(iris_artifact.parent / "iris.skops", tmp_path / "x", BuildOptions(precision="int8"))
    assert list(tmp_path.iterdir()) == []


def test_force_rebuild_replaces_the_artifact(iris_artifact: Path, tmp_path: Path) -> None:
    output = tmp_path / "iris"
    first = build_artifact(iris_artifact.parent / "iris.skops", output, BuildOptions(version="1"))
    second = build_artifact(
        iris_artifact.parent / "iris.skops", output, BuildOptions(version="2", force=True)
    )
    assert (first.version, read_manifest(output).version, second.version) == ("1", "2", "2")
    assert _leftovers(tmp_path) == []


def test_a_tabular_build_keeps_its_verification_inputs_as_the_drift_reference(iris_artifact: Path) -> None:
    from modelfleet.drift.reference import artifact_reference
    from modelfleet.manifest import DRIFT_REFERENCE_FILE, read_manifest

    manifest = read_manifest(iris_artifact)
    assert DRIFT_REFERENCE_FILE in manifest.files  # hashed and verified like every file of the artifact
    reference = artifact_reference(iris_artifact, [field.spec() for field in manifest.inputs], max_items=1000)
    assert reference is not None
    rows = np.asarray(reference.inputs["input"])
    assert rows.ndim == 2 and rows.shape[1] == 4 and len(rows) >= 10
