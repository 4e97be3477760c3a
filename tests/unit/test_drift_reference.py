"""Reference files are read in three formats and refused, in one line naming the setting, when they do not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.reference import load_reference
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.types import Datatype, TensorSpec

IRIS = [TensorSpec("input", Datatype.FP32, (-1, 4))]


def test_csv_with_a_header_and_npy_and_jsonl(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(30, 4))
    np.savetxt(tmp_path / "ref.csv", rows, delimiter=",", header="a,b,c,d", comments="")
    np.save(tmp_path / "ref.npy", rows)
    with (tmp_path / "ref.jsonl").open("wb") as handle:
        for row in rows:  # capture lines: inputs and outputs
            handle.write(orjson.dumps({"inputs": {"input": row.tolist()}, "outputs": {"label": 1}}) + b"\n")
    for name in ("ref.csv", "ref.npy", "ref.jsonl"):
        reference = load_reference(tmp_path / name, IRIS, max_items=20)
        assert reference.inputs["input"].shape == (20, 4) and reference.inputs["input"].dtype == np.float32
    assert load_reference(tmp_path / "ref.jsonl", IRIS, 100).outputs["label"].tolist() == [1] * 30
    assert load_reference(tmp_path / "ref.csv", IRIS, 100).outputs == {}  # the server computes them


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.npy",
            None,
            "input 'input' must have shape [-1, 4] (-1 = any, first axis the items), got [10, 3]",
        ),
        ("bad.jsonl", b'{"petal": [1, 2, 3, 4]}\n', "the model has no input 'petal'"),
        (
            "ragged.jsonl",
            b'{"input": [1, 2, 3, 4]}\n{"input": [1, 2]}\n',
            "input 'input' has items of different shapes",
        ),
        ("bad.csv", b"a,b,c,d\n1,2,3,4\n1,2,x,4\n", "has a row that is not all numbers"),
        ("bad.txt", b"1,2,3,4\n", "must be a .jsonl, .csv or .npy file"),
    ],
)
def test_a_reference_that_does_not_fit_is_one_line(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((10, 3)))
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidInput) as caught:
        load_reference(path, IRIS, 100)
    assert message in caught.value.message and "(model drift.reference.path)" in caught.value.message
    assert "\n" not in caught.value.message


def test_a_missing_file_and_a_file_source_without_a_path() -> None:
    with pytest.raises(NotFound, match="does not exist"):
        load_reference(Path("/nonexistent/ref.csv"), IRIS, 100)
    with pytest.raises(ValueError, match=r"drift\.reference\.source `file` needs drift\.reference\.path"):
        DriftConfig.model_validate({"reference": {"source": "file"}})
