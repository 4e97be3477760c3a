"""`modelfleet build --optimize`: what it refuses, what it fuses, and that the result still verifies and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from tests.support.hf_heads import tiny_head_folder

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.build.optimize import EncoderShape, check_optimizable, optimize_encoder
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest
from modelfleet.runtime import load_model

SENTENCES = np.array([b"a short one", b"and a somewhat longer sentence about serving models"], dtype=object)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random BERT encoder (2 layers, hidden 32, 2 heads): its source folder and its --optimize build."""
    folder = tmp_path_factory.mktemp("optimize")
    source = tiny_head_folder(folder / "source", "BertModel", None)
    optimized = folder / "optimized"
    build_artifact(source, optimized, BuildOptions(name="tiny", optimize=True))
    return source, optimized


def test_optimized_build_fuses_the_encoder_verifies_and_records_it(tiny_encoder: tuple[Path, Path]) -> None:
    _, optimized = tiny_encoder
    manifest = read_manifest(optimized)
    record = manifest.extra["optimization"]
    assert record["tool"] == "onnxruntime.transformers.optimizer"
    assert record["tool_version"] == onnxruntime.__version__
    assert record["model_type"] == "bert" and record["num_heads"] == 2 and record["hidden_size"] == 32
    assert record["fused_operators"]["Attention"] == 2  # one per layer
    assert record["fused_operators"]["SkipLayerNormalization"] >= 2
    assert record["nodes_after"] < record["nodes_before"]
    assert manifest.extra["build_options"]["optimize"] is True
    graph = onnx.load(str(optimized / manifest.model_file))
    assert (
        sum(node.op_type == "Attention" and node.domain == "com.microsoft" for node in graph.graph.node) == 2
    )
    check = manifest.verification[0]
    assert check.passed and check.value >= 0.999


def test_optimized_artifact_serves_the_source_models_embeddings(tiny_encoder: tuple[Path, Path]) -> None:
    from modelfleet.build.huggingface import _ReferenceModel, read_text_settings

    source, optimized_dir = tiny_encoder
    # The source in torch with its default (scaled-dot-product) attention: not the graph that was fused.
    reference = _ReferenceModel.load(source, read_text_settings(source))
    want = reference.embed([text.decode() for text in SENTENCES])
    optimized = load_model(optimized_dir, intra_op_threads=1)
    have = optimized.predict(optimized.validate_inputs({"text": SENTENCES}))["embedding"]
    cosine = (want * have).sum(axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(have, axis=1)
    assert cosine.min() >= 0.999


def test_a_graph_whose_attention_does_not_fuse_is_refused(
    sentiment_head_artifact: Path, tmp_path: Path
) -> None:
    # A default export writes PyTorch's scaled-dot-product attention, which the optimizer cannot fuse.
    with pytest.raises(InvalidInput, match="fused no attention"):
        optimize_encoder(
            sentiment_head_artifact / "model.onnx",
            tmp_path / "out.onnx",
            EncoderShape("bert", "bert", 2, 32),
            False,
        )
    assert not (tmp_path / "out.onnx").exists()


def _config_folder(tmp_path: Path, **config: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_unsupported_model_type_is_refused_before_export(tmp_path: Path) -> None:
    folder = _config_folder(tmp_path, model_type="gpt2", num_attention_heads=2, hidden_size=32)
    with pytest.raises(InvalidInput, match=r"does not support model type 'gpt2'; it supports .*bert"):
        check_optimizable("huggingface", folder, BuildOptions(optimize=True))


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        (
            "huggingface",
            BuildOptions(optimize=True, precision="int8"),
            "cannot be combined with --precision int8",
        ),
        ("huggingface", BuildOptions(optimize=True, target="tensorrt"), "not tensorrt"),
        ("sklearn", BuildOptions(optimize=True), "this source is sklearn"),
    ],
)
def test_optimize_refuses_what_it_cannot_build(
    tmp_path: Path, kind: str, options: BuildOptions, message: str
) -> None:
    folder = _config_folder(tmp_path, model_type="bert", num_attention_heads=2, hidden_size=32)
    with pytest.raises(InvalidInput, match=message):
        check_optimizable(kind, folder, options)


def test_a_classification_head_is_refused_before_export(tmp_path: Path) -> None:
    folder = _config_folder(
        tmp_path,
        model_type="bert",
        num_attention_heads=2,
        hidden_size=32,
        architectures=["BertForSequenceClassification"],
    )
    with pytest.raises(InvalidInput, match="this source builds as text-classification"):
        check_optimizable("huggingface", folder, BuildOptions(optimize=True))


def test_without_optimize_nothing_is_checked(tmp_path: Path) -> None:
    assert check_optimizable("sklearn", tmp_path, BuildOptions()) is None
    shape = check_optimizable(
        "huggingface",
        _config_folder(
            tmp_path, model_type="bert", num_attention_heads=4, hidden_size=64, architectures=["BertModel"]
        ),
        BuildOptions(optimize=True),
    )
    assert shape == EncoderShape("bert", "bert", 4, 64)
