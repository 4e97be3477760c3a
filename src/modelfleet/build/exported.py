"""What an exporter hands the pipeline: an fp32 ONNX graph plus everything needed to describe and verify it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.manifest import Postprocessing, TensorField, Tokenization, Verification

Array = np.ndarray[Any, Any]
# Given an ONNX Runtime session on the finished artifact and the artifact's folder (for its tokenizer
# and other side files), compare the artifact's outputs with the source framework's.
Verifier = Callable[[Any, Path], list[Verification]]


@dataclass(slots=True)
class ExportedModel:
    onnx_path: Path
    task: str
    inputs: list[TensorField]
    outputs: list[TensorField]
    verify: Verifier
    # Graph feeds for choosing an int8 recipe: the same calibration inputs batched several ways,
    # because dynamic quantization's activation scales depend on what shares a batch.
    calibration_feeds: list[dict[str, Array]]
    preprocessing: Tokenization | None = None
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    side_files: dict[str, Path] = field(default_factory=dict)  # artifact-relative name → file to copy in
    libraries: tuple[str, ...] = ()  # distributions whose versions go into the manifest
    extra: dict[str, Any] = field(default_factory=dict)
    # What the build recognised, for people: e.g. "Hugging Face BertForQuestionAnswering folder".
    detected: str = ""
    # What a user must know about the artifact though it built (e.g. numeric labels): recorded in
    # manifest.extra["warnings"] and printed by `modelfleet build`.
    warnings: list[str] = field(default_factory=list)


def no_progress(stage: str) -> None:
    """The default progress callback: library callers that pass none see nothing."""


def row_batchings(feed: dict[str, Array], batch_sizes: tuple[int, ...] = (1, 4)) -> list[dict[str, Array]]:
    """The whole feed as one batch, then split row-wise into batches of each size."""
    rows = len(next(iter(feed.values())))
    feeds = [feed]
    for size in batch_sizes:
        feeds.extend({k: v[i : i + size] for k, v in feed.items()} for i in range(0, rows, size))
    return feeds
