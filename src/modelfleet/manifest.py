"""The artifact format: a folder with ``model.onnx``, optional tokenizer files and ``manifest.json``.

``build`` writes it, ``registry`` stores it, ``runtime`` loads it. The manifest records everything a
server needs to serve the model (V2 tensor specs, pre/post-processing), everything an auditor needs
to trust it (sha256 of every file, source, library versions) and the build's verification figures.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelfleet.errors import IntegrityError, InvalidInput, NotFound
from modelfleet.types import Datatype, TensorSpec

MANIFEST_FILE = "manifest.json"
# The build's verification inputs, one JSON line an item, for drift detection's `reference.source: build`.
DRIFT_REFERENCE_FILE = "drift_reference.jsonl"
MANIFEST_SCHEMA_VERSION = 1
_HASH_CHUNK_BYTES = 1 << 20


# What an artifact does, which decides the server's pre- and post-processing around the graph.
Task = Literal[
    "text-embedding",
    "question-answering",
    "text-classification",
    "token-classification",
    "classification",
    "regression",
    "generic",
]
TASKS: tuple[str, ...] = Task.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorField(_Strict):
    """A V2-facing tensor. ``onnx_name`` is the graph's own name when it differs."""

    name: str = Field(description="Tensor name clients use in V2 requests and responses.")
    datatype: Datatype = Field(description="V2 datatype, e.g. FP32 or BYTES.")
    shape: list[int] = Field(
        description="Shape including the batch dimension; -1 marks a variable dimension."
    )
    onnx_name: str | None = Field(
        default=None, description="Name inside model.onnx, if not the same as `name`."
    )
    optional: bool = Field(
        default=False, description="A request may leave this input out (e.g. a classifier's text_pair)."
    )

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape), self.optional)


class Tokenization(_Strict):
    """Text pre-processing done by the server before the ONNX graph runs."""

    kind: Literal["tokenizer"] = "tokenizer"
    tokenizer_file: str = Field(
        default="tokenizer.json", description="Hugging Face `tokenizers` JSON file in the artifact."
    )
    max_length_tokens: int = Field(
        default=256, gt=0, description="Longer texts are truncated to this many tokens."
    )
    graph_inputs: list[str] = Field(
        default_factory=lambda: ["input_ids", "attention_mask"],
        description="Which of input_ids, attention_mask, token_type_ids the ONNX graph takes, in order.",
    )
    text_inputs: list[str] = Field(
        default_factory=lambda: ["text"],
        description=(
            "The V2 BYTES inputs tokenized together, in order: one text, or a pair (the first and second "
            "sequence of the tokenizer's pair template, token types 0 and 1): question and context, "
            "truncated only in the context; text and text_pair, truncated longest-first."
        ),
    )
    stride_tokens: int = Field(
        default=0,
        ge=0,
        description=(
            "Tokens of overlap between the windows a long second text is split into (question "
            "answering's doc_stride); 0 = no windows, long texts are truncated."
        ),
    )


class Postprocessing(_Strict):
    """What the graph does after the encoder; recorded so clients know what they get."""

    pooling: Literal["mean", "cls", "none"] = "none"
    normalize: bool = False
    max_answer_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Question answering: the longest answer span in tokens (end - start < this).",
    )
    handle_impossible_answer: bool = Field(
        default=False,
        description="Question answering: whether an empty answer may win (false: always a span of the context).",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Class names by logit index (config.json id2label, or '0', '1', .. without one).",
    )
    score_function: Literal["softmax", "sigmoid", "none"] = Field(
        default="none",
        description="What the server applies to the graph's logits: softmax (one label), sigmoid (multi-label).",
    )
    aggregation: Literal["simple", "none"] = Field(
        default="none",
        description=(
            "Token classification: how token labels become entities; simple groups adjacent tokens "
            "as transformers' pipeline(aggregation_strategy='simple') does."
        ),
    )
    ignored_labels: list[str] = Field(
        default_factory=list, description="Token classification: entity groups left out of the output (O)."
    )


class Source(_Strict):
    kind: Literal["huggingface", "sklearn", "onnx", "xgboost", "lightgbm", "torch"]
    path: str
    sha256: str = Field(description="sha256 over the source's files, in sorted path order.")


class Verification(_Strict):
    """Outputs of the artifact compared with the source framework on a fixed sample set."""

    samples: int
    metric: str = Field(description="e.g. min_cosine_similarity, label_agreement, max_abs_prob_diff.")
    value: float
    threshold: float
    passed: bool
    details: dict[str, float] = Field(default_factory=dict)


class Manifest(_Strict):
    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    version: str = "1"
    task: Task = Field(
        default="generic",
        description=(
            "text-embedding, question-answering, text-classification, token-classification (Hugging Face "
            "heads, processed by the server around the graph); classification, regression (tabular); "
            "generic (the graph's own tensors)."
        ),
    )
    created_at: str = Field(description="ISO 8601 UTC time of the build.")
    source: Source
    target: Literal["cpu", "cuda", "tensorrt"] = "cpu"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    model_file: str = "model.onnx"
    inputs: list[TensorField]
    outputs: list[TensorField]
    preprocessing: Tokenization | None = None
    postprocessing: Postprocessing = Postprocessing()
    files: dict[str, str] = Field(
        description="Relative path → sha256 of every file in the artifact except the manifest."
    )
    verification: list[Verification] = Field(default_factory=list)
    libraries: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path, exclude: tuple[str, ...] = (MANIFEST_FILE,)) -> dict[str, str]:
    """sha256 of every regular file below ``root`` keyed by its POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in exclude
    }


def read_manifest(artifact_dir: Path) -> Manifest:
    path = artifact_dir / MANIFEST_FILE
    if not path.is_file():
        raise NotFound(
            f"{artifact_dir} is not a modelfleet artifact: {MANIFEST_FILE} is missing (run `modelfleet build` first)"
        )
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        first = str(exc).splitlines()[0:3]
        raise InvalidInput(f"{path} is not a valid manifest: {' '.join(first)}") from None


def verify_files(artifact_dir: Path, manifest: Manifest) -> None:
    """Refuse an artifact whose files do not match the hashes its manifest recorded."""
    for relative, expected in manifest.files.items():
        path = artifact_dir / relative
        if not path.is_file():
            raise IntegrityError(f"artifact {manifest.name}: file {relative} is missing from {artifact_dir}")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"artifact {manifest.name}: file {relative} is corrupt (sha256 {actual[:12]}… expected {expected[:12]}…)"
            )
