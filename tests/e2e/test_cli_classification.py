"""A sentiment head fine-tuned on the bundled encoder (examples/train_sentiment.py), built with
`modelfleet build` in a subprocess and served: held-out sentences get the right labels."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import tritonclient.http as triton
from tests.support.hf_heads import tiny_head_folder
from tests.support.servers import serve

from modelfleet.manifest import read_manifest

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_sentiment.py"
HELD_OUT = {
    "What a wonderful, joyful evening with friends.": b"positive",
    "A lovely and brilliant little movie.": b"positive",
    "The staff were kind and the room was perfect.": b"positive",
    "That was a painful and boring evening.": b"negative",
    "An awful movie, I regret watching it.": b"negative",
    "The staff were rude and the room was filthy.": b"negative",
}


def _build(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MODELFLEET_DEBUG"}
    return subprocess.run(
        [*MODELFLEET, "build", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=240
    )


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_sentiment", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_fine_tuned_sentiment_head_serves_real_labels(tmp_path: Path) -> None:
    train_s = _example().train_and_save(tmp_path / "sentiment-model")
    assert train_s < 30
    result = _build(tmp_path / "sentiment-model", "-o", "sentiment", "--name", "sentiment", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "found Hugging Face BertForSequenceClassification folder" in result.stdout
    for text in (
        "text-classification",
        "label_agreement",
        "max_abs_prob_diff",
        "text_pair",
        "tokenizer.json",
    ):
        assert text in result.stdout
    assert "warning" not in result.stdout
    assert read_manifest(tmp_path / "sentiment").postprocessing.labels == ["negative", "positive"]
    with serve(["--model", str(tmp_path / "sentiment")], tmp_path) as server:
        texts = triton.InferInput("text", [len(HELD_OUT)], "BYTES")
        texts.set_data_from_numpy(np.array([t.encode() for t in HELD_OUT], dtype=object))
        answer = triton.InferenceServerClient(server.address).infer("sentiment", [texts])
    assert list(answer.as_numpy("label")) == list(HELD_OUT.values())
    assert np.all(answer.as_numpy("probabilities").max(axis=1) > 0.8)  # clearly, not by a coin's edge


def test_a_classifier_without_id2label_builds_with_a_warning(tmp_path: Path) -> None:
    tiny_head_folder(tmp_path / "plain", "BertForSequenceClassification", None)
    result = _build(tmp_path / "plain", "-o", "plain-artifact", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: config.json has no id2label" in result.stdout
    assert 'the labels served are the class numbers "0".."1"' in result.stdout
