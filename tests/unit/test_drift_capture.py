"""Capture files: one CapturedItem per line, rotated at max_file_bytes, the folder capped in bytes and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from modelfleet.config.drift import CaptureConfig
from modelfleet.drift.capture import CaptureWriter, capture_files, read_captured


def _item(index: int) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    return (
        1000.0 + index,
        {
            "input": np.array([index, 0.5, 0.25, 0.125], dtype=np.float32),
            "text": np.array(b"hello", dtype=object),
        },
        {"label": np.array(index % 3, dtype=np.int64)},
    )


def test_rotation_and_caps_keep_the_newest_items(tmp_path: Path) -> None:
    config = CaptureConfig(enabled=True, max_bytes=8192, max_file_bytes=2048, max_files=3)
    writer = CaptureWriter(tmp_path, config, "iris", 2)
    for index in range(400):
        writer.put(_item(index))
    writer.close()
    files = capture_files(tmp_path)
    assert 1 < len(files) <= 3
    assert sum(path.stat().st_size for path in files) <= 8192
    assert all(path.stat().st_size <= 2048 for path in files)
    items = list(read_captured(tmp_path))
    assert items[-1].inputs["input"] == [399.0, 0.5, 0.25, 0.125] and items[-1].outputs == {"label": 0}
    assert [item.at for item in items] == sorted(item.at for item in items)  # oldest files went first
    line = orjson.loads(files[-1].read_bytes().splitlines()[0])
    assert set(line) == {"at", "model", "version", "inputs", "outputs"}
    assert line["model"] == "iris" and line["version"] == 2 and line["inputs"]["text"] == "hello"
    assert writer.written_items == 400 and writer.dropped_items == 0


def test_two_writers_share_a_folder_without_clashing(tmp_path: Path) -> None:
    config = CaptureConfig(enabled=True)
    first, second = CaptureWriter(tmp_path, config, "iris", 1), CaptureWriter(tmp_path, config, "iris", 1)
    first.put(_item(1))
    first.flush()
    second.put(_item(2))
    second.flush()
    first.close()
    second.close()
    assert len(capture_files(tmp_path)) == 2
    assert sorted(item.at for item in read_captured(tmp_path)) == [1001.0, 1002.0]


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    writer = CaptureWriter(
        tmp_path, CaptureConfig(enabled=True, max_buffered_items=5, flush_interval_s=60), "m", None
    )
    for index in range(8):
        writer.put(_item(index))
    writer.close()
    assert writer.dropped_items == 3 and len(list(read_captured(tmp_path))) == 5


def test_a_cut_line_is_skipped(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, CaptureConfig(enabled=True), "m", None)
    writer.put(_item(1))
    writer.close()
    with capture_files(tmp_path)[0].open("ab") as handle:
        handle.write(b'{"at": 1, "model"')
    assert len(list(read_captured(tmp_path))) == 1
