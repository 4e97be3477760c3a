"""Recognise what kind of model source the user points at, and fingerprint it.

Kinds: a Hugging Face transformer folder, a scikit-learn estimator file (skops, or pickle/joblib when
trusted), an ONNX file, XGBoost / LightGBM models in their own saved formats, and PyTorch (a
TorchScript file, or `module:function` code, see torch_source). Detection looks at the path, and
at the content where the suffix cannot tell: a zip's entry names (TorchScript), a file's first bytes
(a `.json` could be anything; an XGBoost model opens with its "learner" object, a LightGBM text
model with "tree\nversion="). Loading (and the checks that come with it) is each exporter's job.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelfleet.build.bundled import BUNDLED_MODEL_NAME, BUNDLED_SOURCE, bundled_model_dir
from modelfleet.build.torch_source import (
    TORCH_SUFFIXES,
    TorchCallable,
    parse_callable,
    refuse_non_torchscript,
    torch_zip_kind,
)
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.manifest import sha256_file

SourceKind = Literal["huggingface", "sklearn", "onnx", "xgboost", "lightgbm", "torch"]
SklearnFormat = Literal["skops", "pickle"]

_SKOPS_SUFFIXES = {".skops"}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}
_ONNX_SUFFIXES = {".onnx"}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_SNIFF_BYTES = 64
# XGBoost's JSON starts `{"learner":`; its UBJSON starts `{`, a length marker, then the key "learner".
_XGBOOST_JSON = re.compile(rb'^\s*\{\s*"learner"\s*:')
_XGBOOST_UBJ = re.compile(rb"^\{(?:[iU].|I..|l....|L........)learner", re.DOTALL)
_LIGHTGBM_TEXT = re.compile(rb"^tree\r?\nversion=")


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """A source the build can load: its kind, location and a name to default to."""

    kind: SourceKind
    path: Path
    default_name: str
    reference: str  # what the user typed, e.g. "bundled:all-MiniLM-L6-v2" or a path
    sklearn_format: SklearnFormat | None = None
    torch_callable: TorchCallable | None = None  # kind "torch" from module:function; None for TorchScript


def resolve_source(source: str | Path) -> ResolvedSource:
    """Map a path (or the `bundled:` name) to a source kind; NotFound/InvalidInput otherwise."""
    text = str(source)
    if text.startswith("bundled:"):
        if text != BUNDLED_SOURCE:
            raise InvalidInput(f"unknown bundled model {text!r}; the bundled model is {BUNDLED_SOURCE}")
        return ResolvedSource("huggingface", bundled_model_dir(), BUNDLED_MODEL_NAME, text)
    path = Path(source).expanduser()
    if not path.exists():
        entry = parse_callable(text)
        if entry is not None:
            return ResolvedSource("torch", entry.file, safe_name(entry.stem), text, torch_callable=entry)
        raise NotFound(f"model source {path} does not exist")
    path = path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedSource("huggingface", path, safe_name(path.name), text)
        raise InvalidInput(
            f"{path} is a folder without config.json; a Hugging Face model folder needs config.json, "
            "weights and a tokenizer"
        )
    suffix = path.suffix.lower()
    if suffix in _ONNX_SUFFIXES:
        stem = path.parent.name if path.stem == "model" else path.stem  # artifact/model.onnx → artifact
        return ResolvedSource("onnx", path, safe_name(stem), text)
    if suffix in _SKOPS_SUFFIXES:
        return ResolvedSource("sklearn", path, safe_name(path.stem), text, "skops")
    if suffix in _PICKLE_SUFFIXES:
        return ResolvedSource("sklearn", path, safe_name(path.stem), text, "pickle")
    if torch_zip_kind(path) == "torchscript":  # by content, whatever the suffix
        return ResolvedSource("torch", path, safe_name(path.stem), text)
    if suffix in TORCH_SUFFIXES:
        raise refuse_non_torchscript(path)
    tree_kind = sniff_tree_model(path)
    if tree_kind is not None:
        return ResolvedSource(tree_kind, path, safe_name(path.stem), text)
    raise InvalidInput(
        f"cannot tell what kind of model {path.name} is: expected a Hugging Face folder, "
        "a .skops (or trusted .pkl/.joblib) scikit-learn file, an .onnx file, an XGBoost model "
        "(Booster.save_model .json/.ubj), a LightGBM text model (Booster.save_model), a TorchScript "
        "file, or module:function returning a torch.nn.Module"
    )


def sniff_tree_model(path: Path) -> Literal["xgboost", "lightgbm"] | None:
    """ "xgboost" or "lightgbm" when the file's first bytes are one of their saved formats, else None."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if _XGBOOST_JSON.match(head) or _XGBOOST_UBJ.match(head):
        return "xgboost"
    if _LIGHTGBM_TEXT.match(head):
        return "lightgbm"
    return None


def safe_name(text: str) -> str:
    """A model name from a file or folder name: unsafe characters become '-'."""
    return _NAME_UNSAFE.sub("-", text).strip("-._") or "model"  # names start with a letter or digit


def source_files(path: Path) -> list[Path]:
    """The files that make up a source, in sorted relative-path order (hidden files skipped)."""
    if path.is_file():
        return [path]
    return sorted(
        (
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ),
        key=lambda p: p.relative_to(path).as_posix(),
    )


def hash_source(path: Path) -> str:
    """sha256 of a file, or of a folder as `relative path NUL file sha256 LF` lines in sorted path order."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in source_files(path):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()
