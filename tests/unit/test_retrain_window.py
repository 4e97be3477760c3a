"""Capture files and labels → a run's window: cut lines skipped, most recent items kept, labels matched by
inputs at float32 precision, the recent part held out, and every mismatch a one-line error naming its setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelfleet.drift import window_io
from modelfleet.drift.types import CapturedItem
from modelfleet.errors import InvalidInput, NotFound


def _item(at: float, row: list[float]) -> CapturedItem:
    return CapturedItem(at=at, model="iris", version=1, inputs={"input": row}, outputs={"label": 0})


def _write_capture(folder: Path, name: str, items: list[CapturedItem], tail: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        json.dumps(
            {"at": i.at, "model": i.model, "version": i.version, "inputs": i.inputs, "outputs": i.outputs}
        )
        + "\n"
        for i in items
    )
    (folder / name).write_text(lines + tail, encoding="utf-8")


def test_the_window_is_the_most_recent_items_oldest_first_without_a_cut_line(tmp_path: Path) -> None:
    _write_capture(
        tmp_path, "capture-000002.jsonl", [_item(3.0, [3.0]), _item(4.0, [4.0])], tail='{"at": 5.0, "mo'
    )
    _write_capture(tmp_path, "capture-000001.jsonl", [_item(1.0, [1.0]), _item(2.0, [2.0])])
    assert [i.at for i in window_io.recent_items(tmp_path, max_items=3)] == [2.0, 3.0, 4.0]
    assert window_io.recent_items(tmp_path / "missing", 10) == []


def test_labels_match_by_inputs_at_float32_precision(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_text(
        json.dumps({"inputs": {"input": [5.1, 3.5]}, "label": 2})
        + "\n\n"
        + json.dumps({"inputs": {"input": [9.0, 9.0]}, "label": 1})
        + "\n"
    )
    labels, digest = window_io.read_labels("labels.jsonl", tmp_path, max_bytes=1000)
    captured = _item(1.0, [5.099999904632568, 3.5])  # how a server decodes 5.1 sent as FP32
    assert window_io.match_labels([captured], labels, "labels.jsonl") == [2]
    assert len(digest) == 64


def test_labels_that_do_not_match_the_window_are_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_text(json.dumps({"inputs": {"input": [1.0]}, "label": 0}) + "\n")
    labels, _ = window_io.read_labels(str(tmp_path / "labels.jsonl"), Path("/"), max_bytes=1000)
    with pytest.raises(
        InvalidInput, match=r"do not match the captured window: 1 of 2 items .*\(retrain.labels\)"
    ):
        window_io.match_labels([_item(1.0, [1.0]), _item(2.0, [2.0])], labels, "labels.jsonl")


def test_bad_labels_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        window_io.read_labels("nope.jsonl", tmp_path, 1000)
    (tmp_path / "bad.jsonl").write_text('{"label": 1}\n')
    with pytest.raises(InvalidInput, match="line 1 is not"):
        window_io.read_labels("bad.jsonl", tmp_path, 1000)
    (tmp_path / "big.jsonl").write_text("x" * 100)
    with pytest.raises(InvalidInput, match=r"over the limit of 10 bytes \(retrain.max_labels_bytes\)"):
        window_io.read_labels("big.jsonl", tmp_path, 10)


def test_snapshot_holds_out_the_most_recent_part_and_aligns_labels(tmp_path: Path) -> None:
    items = [_item(float(t), [float(t)]) for t in range(10)]
    window = window_io.snapshot(items, list(range(10)), tmp_path, holdout_fraction=0.3)
    assert [i.at for i in window.holdout] == [7.0, 8.0, 9.0]
    assert window.train_labels == list(range(7)) and window.holdout_labels == [7, 8, 9]
    lines = (tmp_path / window_io.WINDOW_FILE).read_text().splitlines()
    labels = (tmp_path / window_io.LABELS_FILE).read_text().splitlines()
    assert len(lines) == len(labels) == 7
    assert json.loads(lines[3])["inputs"] == {"input": [3.0]} and json.loads(labels[3]) == {"label": 3}
    assert window.summary["first_at"] == 0.0 and window.summary["last_at"] == 9.0
    (tmp_path / "other").mkdir()
    again = window_io.snapshot(items, list(range(10)), tmp_path / "other", holdout_fraction=0.3)
    assert again.summary["sha256"] == window.summary["sha256"]  # the digest names the data, not the folder
    assert window_io.snapshot(items, None, tmp_path, 0.3).summary["labels_sha256"] is None
