"""Text classification around a logits graph: texts (and optional text pairs) → label and probabilities.

Tokenization and length grouping are TextEncoder's; the graph returns logits [batch, n_labels] and
the server turns them into probabilities with the function the manifest names (softmax for one label
per text, sigmoid for multi-label models) and picks the most probable label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.errors import IntegrityError
from modelfleet.manifest import Manifest
from modelfleet.runtime.processing import GraphRun
from modelfleet.runtime.text import TextEncoder
from modelfleet.types import Arrays

LOGITS = "logits"
PAIR_INPUT = "text_pair"


def softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Softmax over the last axis, shifted by the row maximum as transformers' pipelines do."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: np.ndarray[Any, Any] = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


def sigmoid(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    result: np.ndarray[Any, Any] = 1.0 / (1.0 + np.exp(-logits))
    return result


def text_encoder(manifest: Manifest, artifact_dir: Path, length_grouping: bool = True) -> TextEncoder:
    """The artifact's tokenizer with the manifest's length limit and graph inputs."""
    tokenization = manifest.preprocessing
    if tokenization is None:
        raise IntegrityError(f"model {manifest.name}: a {manifest.task} manifest needs preprocessing")
    return TextEncoder(
        artifact_dir / tokenization.tokenizer_file,
        tokenization.max_length_tokens,
        tokenization.graph_inputs,
        length_grouping=length_grouping,
    )


class TextClassification:
    """`text` (+ optional `text_pair`) → `label` (BYTES) and `probabilities` (FP32 [n, n_labels])."""

    def __init__(
        self, encoder: TextEncoder, labels: list[str], score_function: str, text: str = "text"
    ) -> None:
        self._encoder = encoder
        self._text = text
        self._labels = np.array([label.encode() for label in labels], dtype=object)
        self._scores = sigmoid if score_function == "sigmoid" else softmax

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, artifact_dir: Path, length_grouping: bool = True
    ) -> TextClassification:
        post = manifest.postprocessing
        if not post.labels:
            raise IntegrityError(f"model {manifest.name}: a text-classification manifest needs labels")
        encoder = text_encoder(manifest, artifact_dir, length_grouping)
        return cls(encoder, post.labels, post.score_function, manifest.inputs[0].name)

    def validate(self, inputs: Arrays) -> Arrays:
        prepared = {self._text: self._encoder.prepare(inputs[self._text], self._text)}
        pairs = inputs.get(PAIR_INPUT)
        if pairs is not None:  # the dataplane has checked that it holds one pair per text
            prepared[PAIR_INPUT] = self._encoder.prepare(pairs, PAIR_INPUT)
        return prepared

    def predict(self, run: GraphRun, inputs: Arrays) -> Arrays:
        texts = inputs[self._text]
        encodings = self._encoder.tokenize(texts, inputs.get(PAIR_INPUT))
        logits: np.ndarray[Any, Any] | None = None
        for indices, feed in self._encoder.group_encodings(encodings):
            result = run(feed)[LOGITS]
            if logits is None:
                logits = np.empty((len(encodings), result.shape[1]), dtype=np.float32)
            logits[indices] = result
        assert logits is not None, "a batch holds at least one text"
        probabilities = self._scores(logits).astype(np.float32, copy=False)
        return {"label": self._labels[probabilities.argmax(axis=1)], "probabilities": probabilities}
