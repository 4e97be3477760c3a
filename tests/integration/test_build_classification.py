"""Hugging Face sequence and token classification heads built to artifacts and checked with real runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.support.hf_heads import tiny_head_folder

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest
from modelfleet.runtime.loader import load_model


def _texts(*texts: str) -> np.ndarray:
    return np.array([text.encode() for text in texts], dtype=object)


def test_sequence_manifest_describes_labels_inputs_and_verification(sentiment_head_artifact: Path) -> None:
    manifest = read_manifest(sentiment_head_artifact)
    assert manifest.task == "text-classification"
    assert [(f.name, f.datatype.value, f.shape, f.optional) for f in manifest.inputs] == [
        ("text", "BYTES", [-1], False),
        ("text_pair", "BYTES", [-1], True),
    ]
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.outputs] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    assert manifest.preprocessing is not None
    assert manifest.preprocessing.graph_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.preprocessing.text_inputs == ["text", "text_pair"]
    assert (manifest.postprocessing.labels, manifest.postprocessing.score_function) == (
        ["negative", "positive"],
        "softmax",
    )
    assert manifest.extra["detected"] == "Hugging Face BertForSequenceClassification folder"
    assert "warnings" not in manifest.extra
    labels, probabilities = manifest.verification
    assert (labels.metric, labels.value, labels.samples) == ("label_agreement", 1.0, 48)
    assert labels.details["text_pairs"] == 16
    assert probabilities.metric == "max_abs_prob_diff"
    assert probabilities.threshold == 1e-4
    assert 0 < probabilities.value <= 1e-4  # fp32 graph vs torch: close, never bit-identical
    assert sorted(p.name for p in sentiment_head_artifact.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]


def test_sequence_model_serves_labels_from_probabilities_and_pairs_change_them(
    sentiment_head_artifact: Path,
) -> None:
    model = load_model(sentiment_head_artifact, intra_op_threads=1)
    texts = _texts("A great film.", "A dull film, badly acted.", "Hello!")
    alone = model.predict(model.validate_inputs({"text": texts}))
    probabilities = alone["probabilities"]
    assert probabilities.shape == (3, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    names = np.array([b"negative", b"positive"], dtype=object)
    assert list(alone["label"]) == list(names[probabilities.argmax(axis=1)])
    paired = model.predict(model.validate_inputs({"text": texts, "text_pair": _texts("x", "y", "z")}))
    assert not np.allclose(paired["probabilities"], probabilities)  # the pair's tokens reach the graph
    one = model.predict(model.validate_inputs({"text": texts[1:2], "text_pair": _texts("y")}))
    np.testing.assert_allclose(one["probabilities"][0], paired["probabilities"][1], atol=1e-5)


def test_without_id2label_numeric_labels_are_served_and_the_build_says_so(tmp_path: Path) -> None:
    source = tiny_head_folder(tmp_path / "plain", "BertForSequenceClassification", None, num_labels=3)
    manifest = build_artifact(source, tmp_path / "plain-artifact")
    assert manifest.postprocessing.labels == ["0", "1", "2"]
    [warning] = manifest.extra["warnings"]
    assert "no id2label" in warning and '"0".."2"' in warning
    assert manifest.extra["labels_source"] == "class numbers (no id2label)"
    model = load_model(tmp_path / "plain-artifact", intra_op_threads=1)
    labels = model.predict(model.validate_inputs({"text": _texts("one", "two words")}))["label"]
    assert set(labels) <= {b"0", b"1", b"2"}


def test_multi_label_models_use_sigmoid(tmp_path: Path) -> None:
    source = tiny_head_folder(
        tmp_path / "multi",
        "BertForSequenceClassification",
        {0: "sports", 1: "politics", 2: "tech"},
        problem_type="multi_label_classification",
    )
    manifest = build_artifact(source, tmp_path / "multi-artifact")
    assert manifest.postprocessing.score_function == "sigmoid"
    assert all(check.passed for check in manifest.verification)
    model = load_model(tmp_path / "multi-artifact", intra_op_threads=1)
    probabilities = model.predict(model.validate_inputs({"text": _texts("a", "b c d")}))["probabilities"]
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # independent per label


def test_token_manifest_records_aggregation_and_pipeline_verification(ner_head_artifact: Path) -> None:
    manifest = read_manifest(ner_head_artifact)
    assert manifest.task == "token-classification"
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.inputs] == [("text", "BYTES", [-1])]
    assert [(f.name, f.datatype.value, f.shape) for f in manifest.outputs] == [("entities", "BYTES", [-1])]
    post = manifest.postprocessing
    assert post.labels == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert (post.score_function, post.aggregation, post.ignored_labels) == ("softmax", "simple", ["O"])
    agreement, scores = manifest.verification
    assert (agreement.metric, agreement.value, agreement.samples) == ("entity_agreement", 1.0, 32)
    assert agreement.details["entity_groups"] >= 20  # the comparison saw real groups, not empty lists
    assert (scores.metric, scores.threshold) == ("max_abs_score_diff", 1e-4)
    assert scores.value <= 1e-4


def test_token_model_serves_entities_with_spans_into_the_text(ner_head_artifact: Path) -> None:
    model = load_model(ner_head_artifact, intra_op_threads=1)
    texts = [
        "John Smith moved from Paris to Zürich ☃ in 2019, and later, with Anna-Lena Schmidt-Weber, "
        "on to Reykjavík, São Paulo and Ulaanbaatar before settling in Kraków.",
        "Nothing here",
    ]
    [first, second] = model.predict(model.validate_inputs({"text": _texts(*texts)}))["entities"]
    for text, raw in zip(texts, (first, second), strict=True):
        for entity in json.loads(raw):
            assert set(entity) == {"entity_group", "score", "word", "start", "end"}
            assert entity["entity_group"] in {"PER", "LOC"}
            assert 0 <= entity["start"] < entity["end"] <= len(text)
            assert 0 < entity["score"] <= 1
    assert json.loads(first)  # the random head tags something in a sentence this long


def test_int8_is_refused_for_heads(tmp_path: Path, sentiment_head_artifact: Path) -> None:
    source = sentiment_head_artifact.parent / "sentiment-source"
    with pytest.raises(InvalidInput, match="fp32 only"):
        build_artifact(source, tmp_path / "int8", BuildOptions(precision="int8"))
    assert not (tmp_path / "int8").exists()


@pytest.mark.parametrize("task", ["token-classification", "question-answering"])
def test_a_task_the_head_lacks_is_refused(tmp_path: Path, sentiment_head_artifact: Path, task: str) -> None:
    source = sentiment_head_artifact.parent / "sentiment-source"
    with pytest.raises(InvalidInput, match=f"has no {task} head"):
        build_artifact(source, tmp_path / "x", BuildOptions(task=task))  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_a_head_with_corrupt_weights_is_refused_naming_the_folder(
    tmp_path: Path, sentiment_head_artifact: Path
) -> None:
    source = shutil.copytree(sentiment_head_artifact.parent / "sentiment-source", tmp_path / "broken")
    (source / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidInput, match=r"cannot load the model in .*broken"):
        build_artifact(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_task_text_embedding_builds_the_encoder_under_a_head(
    tmp_path: Path, sentiment_head_artifact: Path
) -> None:
    source = sentiment_head_artifact.parent / "sentiment-source"
    manifest = build_artifact(source, tmp_path / "encoder", BuildOptions(task="text-embedding"))
    assert manifest.task == "text-embedding" and manifest.outputs[0].name == "embedding"
    assert manifest.extra["detected"] == "Hugging Face BertForSequenceClassification folder"
    assert all(v.passed for v in manifest.verification)


def test_an_unsupported_architecture_lists_the_supported_ones(
    tmp_path: Path, sentiment_head_artifact: Path
) -> None:
    source = shutil.copytree(sentiment_head_artifact.parent / "sentiment-source", tmp_path / "causal")
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["BertLMHeadModel"]
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match=r"BertLMHeadModel is not supported.*ForQuestionAnswering"):
        build_artifact(source, tmp_path / "x")
    assert not (tmp_path / "x").exists()
