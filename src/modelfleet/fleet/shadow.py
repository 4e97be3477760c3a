"""Compare a shadow (canary) answer with the answer the client got: pure, numpy only.

Outputs are matched by name. Labels (BYTES, BOOL and integer outputs: a classifier's class) are compared
element by element, giving the share that agree; floating-point outputs of rank ≥ 2 are compared row by
row with cosine similarity (an embedding, or a classifier's scores), a rank-1 float output as one vector.
Answers in the binary tensor extension are not decoded here and count as not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

_LABEL_TYPES = frozenset(
    {"BYTES", "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
# An answer is compared only up to this size: larger ones are counted as not comparable rather than
# parsed on the router's event loop.
MAX_COMPARED_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Comparison:
    """Label agreement (0..1) over every label element, and the mean and least cosine over every float row."""

    label_agreement: float | None
    cosine_mean: float | None
    cosine_min: float | None
    rows: int


def _outputs(body: bytes) -> dict[str, dict[str, Any]] | None:
    if len(body) > MAX_COMPARED_BYTES:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        return None
    named = {}
    for output in outputs:
        if isinstance(output, dict) and isinstance(output.get("name"), str) and "data" in output:
            named[output["name"]] = output
    return named


def compare_answers(primary: bytes, shadow: bytes) -> Comparison | None:
    """How far ``shadow`` agrees with ``primary`` (two V2 JSON inference answers); None if not comparable."""
    left, right = _outputs(primary), _outputs(shadow)
    if not left or right is None:
        return None
    agree = labels = 0
    cosines: list[np.ndarray[Any, Any]] = []
    for name, output in left.items():
        other = right.get(name)
        if other is None or other.get("shape") != output.get("shape"):
            return None
        datatype = output.get("datatype")
        if datatype in _LABEL_TYPES:
            a, b = np.asarray(output["data"], dtype=object), np.asarray(other["data"], dtype=object)
            if a.shape != b.shape:
                return None
            agree += int(np.count_nonzero(a == b))
            labels += a.size
        elif datatype in _FLOAT_TYPES:
            shape = output.get("shape")
            try:
                a = np.asarray(output["data"], dtype=np.float64).reshape(shape)
                b = np.asarray(other["data"], dtype=np.float64).reshape(shape)
            except (ValueError, TypeError):
                return None
            rows = a.reshape(1, -1) if a.ndim < 2 else a.reshape(a.shape[0], -1)
            other_rows = b.reshape(rows.shape)
            norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(other_rows, axis=1)
            dots = np.einsum("ij,ij->i", rows, other_rows)
            # Two zero vectors agree; one zero vector against another does not.
            cosines.append(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0))
    if not labels and not cosines:
        return None
    every = np.concatenate(cosines) if cosines else None
    return Comparison(
        label_agreement=agree / labels if labels else None,
        cosine_mean=None if every is None else float(every.mean()),
        cosine_min=None if every is None else float(every.min()),
        rows=0 if every is None else int(every.size),
    )
