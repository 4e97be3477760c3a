"""The bundled MiniLM built to fp32 and int8 artifacts (session fixtures), checked with real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact, bundled_model_dir
from modelfleet.build.sources import hash_source
from modelfleet.manifest import hash_tree, read_manifest, verify_files


def _embed(artifact: Path, texts: list[str]) -> np.ndarray[Any, Any]:
    """Embed the way a server does: the artifact's tokenizer.json, then the graph."""
    manifest = read_manifest(artifact)
    assert manifest.preprocessing is not None
    tokenizer = Tokenizer.from_file(str(artifact / manifest.preprocessing.tokenizer_file))
    encodings = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    session = ort.InferenceSession(str(artifact / manifest.model_file), providers=["CPUExecutionProvider"])
    result: np.ndarray[Any, Any] = session.run(["embedding"], feed)[0]
    return result


@pytest.mark.parametrize("fixture", ["minilm_fp32_artifact", "minilm_int8_artifact"])
def test_manifest_describes_a_text_embedding_model(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact: Path = request.getfixturevalue(fixture)
    manifest = read_manifest(artifact)
    precision = fixture.split("_")[1]
    assert manifest.name == "all-MiniLM-L6-v2"
    assert (manifest.version, manifest.task, manifest.precision) == ("1", "text-embedding", precision)
    assert (manifest.target, manifest.graph_optimization_level) == ("cpu", "all")
    assert [f.model_dump() for f in manifest.inputs] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1], "onnx_name": None, "optional": False}
    ]
    assert [f.model_dump() for f in manifest.outputs] == [
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 384], "onnx_name": None, "optional": False}
    ]
    assert manifest.preprocessing is not None
    assert manifest.preprocessing.max_length_tokens == 256
    assert manifest.preprocessing.graph_inputs == ["input_ids", "attention_mask"]
    assert (manifest.postprocessing.pooling, manifest.postprocessing.normalize) == ("mean", True)
    assert manifest.source.kind == "huggingface"
    assert manifest.source.sha256 == hash_source(bundled_model_dir())
    assert manifest.extra["source_reference"] == BUNDLED_SOURCE
    assert {"torch", "transformers", "sentence-transformers", "onnxruntime", "onnx"} <= set(
        manifest.libraries
    )


@pytest.mark.parametrize("fixture", ["minilm_fp32_artifact", "minilm_int8_artifact"])
def test_every_file_is_hashed_and_nothing_else_is_there(fixture: str, request: pytest.FixtureRequest) -> None:
    artifact: Path = request.getfixturevalue(fixture)
    manifest = read_manifest(artifact)
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert manifest.files == hash_tree(artifact)
    verify_files(artifact, manifest)
    assert not list(artifact.parent.glob("*.tmp-*"))


@pytest.mark.parametrize(
    ("fixture", "threshold"), [("minilm_fp32_artifact", 0.999), ("minilm_int8_artifact", 0.98)]
)
def test_verification_figures_are_recorded_and_above_threshold(
    fixture: str, threshold: float, request: pytest.FixtureRequest
) -> None:
    [check] = read_manifest(request.getfixturevalue(fixture)).verification
    assert check.metric == "min_cosine_similarity"
    assert check.samples == 32
    assert check.threshold == threshold
    assert check.passed and threshold <= check.value <= 1.0 + 1e-9
    assert check.details["min_cosine_length_sorted_batches"] >= check.value
    assert check.details["min_cosine_mixed_batches"] >= check.value


def test_graph_takes_token_ids_and_returns_pooled_embeddings(minilm_fp32_artifact: Path) -> None:
    model = onnx.load(str(minilm_fp32_artifact / "model.onnx"), load_external_data=False)
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]
    [output] = model.graph.output
    assert output.name == "embedding"
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["batch", 384]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("fixture", ["minilm_fp32_artifact", "minilm_int8_artifact"])
def test_embeddings_are_normalised_and_meaningful(fixture: str, request: pytest.FixtureRequest) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
        "Shares dropped steeply on the exchange.",
        "x",
    ]
    embeddings = _embed(request.getfixturevalue(fixture), texts)
    assert embeddings.shape == (5, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[2, 3] > similarity[2, 0] + 0.3


def test_padding_does_not_change_an_embedding(minilm_fp32_artifact: Path) -> None:
    alone = _embed(minilm_fp32_artifact, ["Hello there"])[0]
    padded = _embed(minilm_fp32_artifact, ["Hello there", "a much longer sentence " * 10])[0]
    assert float(alone @ padded) > 0.99999


def test_long_texts_are_truncated_to_max_length(minilm_fp32_artifact: Path) -> None:
    tokenizer = Tokenizer.from_file(str(minilm_fp32_artifact / "tokenizer.json"))
    assert len(tokenizer.encode("word " * 1000).ids) == 256
    config = json.loads((minilm_fp32_artifact / "tokenizer.json").read_text())
    assert config["truncation"]["max_length"] == 256
    assert _embed(minilm_fp32_artifact, ["word " * 1000]).shape == (1, 384)


def test_int8_is_smaller_and_close_to_fp32(minilm_fp32_artifact: Path, minilm_int8_artifact: Path) -> None:
    fp32_bytes = (minilm_fp32_artifact / "model.onnx").stat().st_size
    int8_bytes = (minilm_int8_artifact / "model.onnx").stat().st_size
    assert int8_bytes < 0.6 * fp32_bytes
    quantization = read_manifest(minilm_int8_artifact).extra["quantization"]
    assert quantization["weight_type"] == "QInt8" and quantization["quantized_matmuls"] > 0
    assert quantization["calibration_min_cosine"] >= 0.98
    texts = ["The weather is lovely today.", "Rust and Python are programming languages."]
    similarity = np.sum(_embed(minilm_fp32_artifact, texts) * _embed(minilm_int8_artifact, texts), axis=1)
    assert np.all(similarity > 0.98)


def test_onnx_file_of_an_artifact_builds_as_a_generic_model(
    minilm_fp32_artifact: Path, tmp_path: Path
) -> None:
    manifest = build_artifact(minilm_fp32_artifact / "model.onnx", tmp_path / "generic", BuildOptions())
    assert (manifest.name, manifest.task, manifest.source.kind) == ("minilm-fp32", "generic", "onnx")
    assert manifest.preprocessing is None
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.inputs] == [
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.outputs] == [
        ("embedding", "FP32", [-1, 384])
    ]
    [check] = manifest.verification
    assert check.passed and check.value > 0.999999
    assert manifest.source.sha256 == read_manifest(minilm_fp32_artifact).files["model.onnx"]
    assert (tmp_path / "generic" / "model.onnx").stat().st_size == (
        minilm_fp32_artifact / "model.onnx"
    ).stat().st_size


def test_length_grouping_off_pads_one_run_and_embeds_the_same(minilm_fp32_artifact: Path) -> None:
    from modelfleet.runtime.loader import load_model

    texts = np.array([b"short", b"word " * 60, b"a sentence of middling length here"], dtype=object)
    grouped = load_model(minilm_fp32_artifact, intra_op_threads=1)
    whole = load_model(minilm_fp32_artifact, intra_op_threads=1, length_grouping=False)
    a = grouped.predict(grouped.validate_inputs({"text": texts}))["embedding"]
    b = whole.predict(whole.validate_inputs({"text": texts}))["embedding"]
    assert np.allclose(a, b, atol=1e-5)  # padding is masked: the same embeddings either way
