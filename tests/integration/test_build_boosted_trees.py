"""XGBoost and LightGBM models built into artifacts, served over real HTTP and compared with the framework."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
import xgboost as xgb
import yaml
from tests.support.servers import RunningServer, serve
from tests.support.tree_models import (
    FEATURES,
    TREES,
    training_data,
    write_lightgbm_models,
    write_xgboost_models,
)

from modelfleet.bench.targets import v2_bodies
from modelfleet.build import BuildOptions, build_artifact
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest, verify_files
from modelfleet.runtime.loader import load_model

Array = np.ndarray[Any, Any]
# name → (task, source kind, n_classes or 0)
EXPECTED = {
    "xgb-binary": ("classification", "xgboost", 2),
    "xgb-multi": ("classification", "xgboost", 3),
    "xgb-reg": ("regression", "xgboost", 0),
    "lgb-binary": ("classification", "lightgbm", 2),
    "lgb-multi": ("classification", "lightgbm", 3),
    "lgb-reg": ("regression", "lightgbm", 0),
}
ROWS = np.random.default_rng(7).normal(size=(16, FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("trees")
    return {**write_xgboost_models(folder), **write_lightgbm_models(folder)}


@pytest.fixture(scope="module")
def artifacts(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tree-artifacts")
    for name, source in sources.items():
        build_artifact(source, folder / name, BuildOptions())
    return {name: folder / name for name in sources}


@pytest.fixture(scope="module")
def server(artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("tree-server")
    spec_file = folder / "serve.yaml"
    spec_file.write_text(yaml.safe_dump({"models": [{"path": str(p)} for p in artifacts.values()]}))
    with serve(["--spec", str(spec_file)], folder) as running:
        yield running


def _framework(source: Path, rows: Array) -> Array:
    """The framework's own output on `rows`: P(class 1), class probabilities or predictions."""
    if source.suffix == ".txt":
        return np.asarray(lgb.Booster(model_file=str(source)).predict(rows))
    return np.asarray(xgb.Booster(model_file=str(source)).predict(xgb.DMatrix(rows)))


def _probabilities(raw: Array) -> Array:
    return np.stack([1.0 - raw, raw], axis=1) if raw.ndim == 1 else raw


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_describes_the_model_and_its_verification(name: str, artifacts: dict[str, Path]) -> None:
    task, kind, n_classes = EXPECTED[name]
    manifest = read_manifest(artifacts[name])
    verify_files(artifacts[name], manifest)
    assert (manifest.task, manifest.source.kind) == (task, kind)
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.inputs] == [
        ("input", "FP32", [-1, FEATURES])
    ]
    framework = "XGBoost" if kind == "xgboost" else "LightGBM"
    assert manifest.extra["detected"].startswith(f"{framework} ")
    assert manifest.extra["n_trees"] == TREES * (n_classes if n_classes > 2 else 1)  # a tree per class
    if n_classes:
        assert [(f.name, f.datatype.value, f.shape) for f in manifest.outputs] == [
            ("label", "INT64", [-1]),
            ("probabilities", "FP32", [-1, n_classes]),
        ]
        assert [v.metric for v in manifest.verification] == ["label_agreement", "max_abs_probability_diff"]
        assert manifest.verification[0].value == 1.0 and manifest.verification[1].value < 1e-5
    else:
        assert [(f.name, f.shape) for f in manifest.outputs] == [("prediction", [-1, 1])]
        assert [v.metric for v in manifest.verification] == ["max_abs_prediction_diff"]
    assert all(v.passed and v.samples == 64 for v in manifest.verification)
    assert manifest.libraries["onnxmltools"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_served_answers_match_the_framework(
    name: str, server: RunningServer, sources: dict[str, Path]
) -> None:
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer(name, [tensor])
    raw = _framework(sources[name], ROWS)
    if EXPECTED[name][2]:
        expected = _probabilities(raw)
        np.testing.assert_array_equal(result.as_numpy("label"), expected.argmax(axis=1))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    else:
        np.testing.assert_allclose(result.as_numpy("prediction")[:, 0], raw, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["xgb-multi", "lgb-reg"])
def test_runtime_model_answers_like_the_framework(
    name: str, artifacts: dict[str, Path], sources: dict[str, Path]
) -> None:
    model = load_model(artifacts[name], intra_op_threads=1)
    try:
        got = model.predict(model.validate_inputs({"input": ROWS}))
    finally:
        model.close()
    raw = _framework(sources[name], ROWS)
    if name == "xgb-multi":
        np.testing.assert_array_equal(got["label"], raw.argmax(axis=1))
        np.testing.assert_allclose(got["probabilities"], raw, atol=1e-5)
    else:
        np.testing.assert_allclose(got["prediction"][:, 0], raw, rtol=1e-5, atol=1e-4)


def test_bench_requests_from_metadata_are_served(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        for name in EXPECTED:
            metadata = http.get(f"/v2/models/{name}").raise_for_status().json()
            bodies = v2_bodies(metadata, [], seed=1)
            response = http.post(f"/v2/models/{name}/infer", content=bodies[0])
            assert response.status_code == 200, response.text
            outputs = {o["name"]: o for o in orjson.loads(response.content)["outputs"]}
            assert set(outputs) == ({"label", "probabilities"} if EXPECTED[name][2] else {"prediction"})


def test_json_that_is_not_a_tree_model_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "config.json"
    source.write_text('{"hidden_size": 32}')
    with pytest.raises(InvalidInput, match=r"cannot tell what kind of model config\.json is"):
        build_artifact(source, tmp_path / "out", BuildOptions())
    assert not (tmp_path / "out").exists()


def test_ranking_objective_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    booster = xgb.train(
        {"objective": "rank:pairwise"},
        xgb.DMatrix(rng.normal(size=(40, 3)), label=rng.integers(0, 3, size=40), group=[20, 20]),
        num_boost_round=2,
    )
    source = tmp_path / "ranker.json"
    booster.save_model(source)
    with pytest.raises(
        InvalidInput, match=r"objective rank:pairwise is not supported; supported: binary:logistic"
    ):
        build_artifact(source, tmp_path / "out", BuildOptions())


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("cut.json", b'{"learner":{"attributes":{', "cut.json is not a readable XGBoost model"),
        ("cut.ubj", b"{i\x07learner{i", "cut.ubj is not a readable XGBoost model"),
        ("cut.txt", b"tree\nversion=v4\nnum_class=", "cut.txt is not a readable LightGBM model"),
    ],
)
def test_corrupt_tree_model_is_one_clear_error(
    tmp_path: Path, filename: str, content: bytes, message: str
) -> None:
    source = tmp_path / filename
    source.write_bytes(content)
    with pytest.raises(InvalidInput, match=message):
        build_artifact(source, tmp_path / "out", BuildOptions())
    assert not (tmp_path / "out").exists()


def test_early_stopped_xgboost_serves_its_best_iteration_like_its_sklearn_api(tmp_path: Path) -> None:
    features, targets = training_data()
    labels = (targets["binary"] ^ (np.random.default_rng(3).random(len(features)) < 0.3)).astype(int)  # noisy
    model = xgb.XGBClassifier(n_estimators=200, early_stopping_rounds=3, learning_rate=0.5, max_depth=3)
    model.fit(features[:150], labels[:150], eval_set=[(features[150:], labels[150:])], verbose=False)
    assert model.best_iteration < 100  # stopped early: the file holds more trees than the model predicts with
    source = tmp_path / "stopped.json"
    model.save_model(source)
    manifest = build_artifact(source, tmp_path / "stopped", BuildOptions())
    assert manifest.extra["best_iteration"] == model.best_iteration
    assert manifest.extra["n_trees"] == model.best_iteration + 1
    loaded = xgb.XGBClassifier()
    loaded.load_model(source)
    runtime = load_model(tmp_path / "stopped", intra_op_threads=1)
    try:
        got = runtime.predict(runtime.validate_inputs({"input": ROWS}))
    finally:
        runtime.close()
    np.testing.assert_allclose(got["probabilities"], loaded.predict_proba(ROWS), atol=1e-5)


def test_samples_file_replaces_the_generated_rows(sources: dict[str, Path], tmp_path: Path) -> None:
    samples = tmp_path / "rows.npy"
    np.save(samples, training_data()[0][:20])
    manifest = build_artifact(sources["lgb-multi"], tmp_path / "custom", BuildOptions(samples=samples))
    assert {v.samples for v in manifest.verification} == {20}
    assert manifest.extra["verification_samples"] == "custom"
    np.save(samples, np.ones((3, 5)))
    with pytest.raises(InvalidInput, match="rows of 6 numbers"):
        build_artifact(sources["xgb-reg"], tmp_path / "bad", BuildOptions(samples=samples))
