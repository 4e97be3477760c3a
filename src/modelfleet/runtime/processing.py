"""What the server does around the graph, chosen by the artifact's task.

Every task shares one ONNX Runtime session (`runtime/onnx.py`); a `Processing` turns one batch of
V2 inputs into graph feeds and the graph's outputs back into V2 outputs. Text tasks tokenize and
group by length here; tabular and generic artifacts pass their tensors straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelfleet.manifest import Manifest
from modelfleet.runtime.text import TextEncoder
from modelfleet.types import Arrays

# Runs the graph on one feed (graph input name → array); returns the graph's outputs by graph name.
GraphRun = Callable[[dict[str, np.ndarray[Any, Any]]], dict[str, np.ndarray[Any, Any]]]


class Processing(Protocol):
    def validate(self, inputs: Arrays) -> Arrays:
        """One request's inputs checked and prepared (O(bytes), on the event loop); InvalidInput if bad."""
        ...

    def predict(self, run: GraphRun, inputs: Arrays) -> Arrays:
        """One batch of V2 inputs → V2 outputs (in a worker thread); `run` may be called several times."""
        ...


class TensorProcessing:
    """Tabular and generic artifacts: V2 tensors are the graph's tensors, renamed."""

    def __init__(self, manifest: Manifest) -> None:
        self._input_map = {field.name: field.onnx_name or field.name for field in manifest.inputs}
        self._output_map = {field.name: field.onnx_name or field.name for field in manifest.outputs}

    def validate(self, inputs: Arrays) -> Arrays:
        return inputs

    def predict(self, run: GraphRun, inputs: Arrays) -> Arrays:
        results = run({self._input_map[name]: array for name, array in inputs.items()})
        return {name: results[graph_name] for name, graph_name in self._output_map.items()}


class TextEmbedding:
    """Texts → tokenized length groups → one run per group → embeddings back in request order."""

    def __init__(self, manifest: Manifest, artifact_dir: Path, length_grouping: bool = True) -> None:
        tokenization = manifest.preprocessing
        assert tokenization is not None, "a text-embedding manifest has preprocessing"
        self._encoder = TextEncoder(
            artifact_dir / tokenization.tokenizer_file,
            tokenization.max_length_tokens,
            tokenization.graph_inputs,
            length_grouping=length_grouping,
        )
        self._input = manifest.inputs[0].name
        self._output_map = {field.name: field.onnx_name or field.name for field in manifest.outputs}

    def validate(self, inputs: Arrays) -> Arrays:
        return {self._input: self._encoder.prepare(inputs[self._input], self._input)}

    def predict(self, run: GraphRun, inputs: Arrays) -> Arrays:
        texts = inputs[self._input]
        count = texts.shape[0]
        groups = self._encoder.encode_groups(texts)
        if len(groups) == 1 and groups[0][0] == list(range(count)):
            # One run over the whole batch in request order (every lone request, and a batch of texts of
            # one length): the graph's outputs are the answer as they are, not copied into a new array.
            results = run(groups[0][1])
            return {name: results[graph_name] for name, graph_name in self._output_map.items()}
        merged: Arrays = {}
        for indices, feed in groups:
            results = run(feed)
            for name, graph_name in self._output_map.items():
                result = results[graph_name]
                if name not in merged:
                    merged[name] = np.empty((count, *result.shape[1:]), dtype=result.dtype)
                merged[name][indices] = result
        return merged


def make_processing(manifest: Manifest, artifact_dir: Path, length_grouping: bool = True) -> Processing:
    """The processing for an artifact's task (one line per task here; each lives in its own module).

    `length_grouping` (text tasks): split a batch into runs of similar length, or pad it as one run.
    """
    if manifest.task == "question-answering":
        from modelfleet.runtime.question_answering import make_question_answering

        return make_question_answering(manifest, artifact_dir, length_grouping)
    if manifest.task == "text-embedding" or (manifest.task == "generic" and manifest.preprocessing):
        return TextEmbedding(manifest, artifact_dir, length_grouping)
    if manifest.task == "text-classification":
        from modelfleet.runtime.classification import TextClassification

        return TextClassification.from_manifest(manifest, artifact_dir, length_grouping)
    if manifest.task == "token-classification":
        from modelfleet.runtime.token_classification import TokenClassification

        return TokenClassification.from_manifest(manifest, artifact_dir, length_grouping)
    return TensorProcessing(manifest)
