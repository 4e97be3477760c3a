"""Shadow comparison of two V2 answers: label agreement for classes, cosine for vectors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from modelfleet.fleet.shadow import compare_answers


def _answer(*outputs: dict[str, Any]) -> bytes:
    return orjson.dumps({"model_name": "m", "outputs": list(outputs)})


def _vectors(data: list[float], shape: list[int]) -> dict[str, Any]:
    return {"name": "embedding", "datatype": "FP32", "shape": shape, "data": data}


def test_labels_agree_element_by_element() -> None:
    left = _answer({"name": "label", "datatype": "BYTES", "shape": [4], "data": ["a", "b", "c", "d"]})
    right = _answer({"name": "label", "datatype": "BYTES", "shape": [4], "data": ["a", "b", "x", "d"]})
    comparison = compare_answers(left, right)
    assert comparison is not None and comparison.label_agreement == 0.75 and comparison.cosine_mean is None


def test_vectors_compare_row_by_row_with_cosine() -> None:
    left = _answer(_vectors([1, 0, 0, 1, 2, 2], [3, 2]))
    right = _answer(_vectors([2, 0, 1, 0, 1, 1], [3, 2]))
    comparison = compare_answers(left, right)
    assert comparison is not None and comparison.rows == 3
    assert comparison.cosine_min == pytest.approx(0.0)
    assert comparison.cosine_mean == pytest.approx((1 + 0 + 1) / 3)


def test_same_answer_is_full_agreement() -> None:
    body = _answer(
        _vectors([0.1, -0.4, 0.3], [1, 3]), {"name": "id", "datatype": "INT64", "shape": [1], "data": [2]}
    )
    comparison = compare_answers(body, body)
    assert comparison is not None
    assert comparison.label_agreement == 1.0 and comparison.cosine_min == pytest.approx(1.0)


@pytest.mark.parametrize(
    "shadow",
    [
        b"\x00binary tensor data",
        _answer(_vectors([1, 0, 0, 1], [1, 4])),  # another shape
        _answer({"name": "other", "datatype": "FP32", "shape": [1, 2], "data": [1, 0]}),  # another output
        b'{"error": "model m failed"}',
    ],
)
def test_answers_that_cannot_be_compared_say_so(shadow: bytes) -> None:
    assert compare_answers(_answer(_vectors([1, 0], [1, 2])), shadow) is None
