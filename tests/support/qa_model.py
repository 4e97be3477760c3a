"""A tiny random-initialised BertForQuestionAnswering folder: examples/make_qa_model.py's, loaded from there
so the example the docs point at is the one the tests build."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "make_qa_model.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("make_qa_model", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_qa_model(folder: Path) -> Path:
    """Random weights (seed 0), 2 layers, hidden 32, 128 positions: long contexts split into windows."""
    result: Path = _example().write_qa_model(folder)
    return result


def write_minilm_qa_model(folder: Path) -> Path:
    """The bundled MiniLM encoder under a random span head (seed 0): a realistic cost per window."""
    result: Path = _example().write_minilm_qa_model(folder)
    return result
