"""The on-disk capture of sampled items: JSON lines in the `CapturedItem` shape, rotated and size-capped.

Files are `<dir>/capture-NNNNNN-pPID.jsonl`: several server processes (workers, replicas) may capture one
model into one folder, so each writes its own files (NNNNNN continues after the highest number in the folder)
and every writer enforces the folder's caps (`max_bytes`, `max_files`) by deleting the oldest files.
The event loop only appends an item to a bounded queue; a background thread serialises and writes it, so
disk speed never reaches a request. Only tensors are ever written: never a header or an API key.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from modelfleet.config.drift import CaptureConfig
from modelfleet.drift.sampling import Item, jsonable
from modelfleet.drift.types import CapturedItem

CAPTURE_GLOB = "capture-*.jsonl"
# A local fleet's supervisor tells its servers where capture/ is; each model writes to a folder of its name there.
CAPTURE_DIR_ENV = "MODELFLEET_CAPTURE_DIR"
_NAME = re.compile(r"^capture-(\d+)(?:-p\d+)?\.jsonl$")


def capture_files(folder: Path) -> list[Path]:
    """A model's capture files, oldest first (by their number, then name)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p.name, p) for p in folder.glob(CAPTURE_GLOB) if (m := _NAME.match(p.name))]
    return [path for _, _, path in sorted(found)]


def read_captured(folder: Path) -> Iterator[CapturedItem]:
    """Every captured item of a model, oldest file first; a line cut short by a crash is skipped."""
    for path in capture_files(folder):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # rotated away by a writer meanwhile
            continue
        for line in data.splitlines():
            try:
                raw = orjson.loads(line)
                yield CapturedItem(
                    at=float(raw["at"]),
                    model=str(raw["model"]),
                    version=raw.get("version"),
                    inputs=dict(raw["inputs"]),
                    outputs=dict(raw["outputs"]),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue


def item_line(model: str, version: int | None, item: Item) -> bytes:
    at, inputs, outputs = item
    document: dict[str, Any] = {
        "at": round(at, 6),
        "model": model,
        "version": version,
        "inputs": {name: jsonable(value) for name, value in inputs.items()},
        "outputs": {name: jsonable(value) for name, value in outputs.items()},
    }
    return orjson.dumps(document) + b"\n"


class CaptureWriter:
    """Queues sampled items and writes them from one daemon thread every `flush_interval_s`."""

    def __init__(self, folder: Path, config: CaptureConfig, model: str, version: int | None) -> None:
        self.folder = folder
        self.config = config
        self.model = model
        self.version = version
        self.dropped_items = 0  # queue full: the disk is slower than the sampled traffic
        self.written_items = 0
        self._queue: deque[Item] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._file: Path | None = None
        self._file_bytes = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time: the thread's and close()'s

    def put(self, item: Item) -> None:
        """Called on the event loop: O(1), never touches the disk."""
        if len(self._queue) >= self.config.max_buffered_items:
            self.dropped_items += 1
            return
        self._queue.append(item)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"capture-{self.model}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.config.flush_interval_s)
            self.flush()

    def flush(self) -> None:
        """Write what is queued (rotating and enforcing the caps); a disk error drops the batch, never raises."""
        with self._lock:
            lines = []
            while self._queue:
                lines.append(item_line(self.model, self.version, self._queue.popleft()))
            if not lines:
                return
            try:
                self._write(lines)
            except OSError:
                self.dropped_items += len(lines)

    def _write(self, lines: list[bytes]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for line in lines:
            if self._file is None or self._file_bytes + len(line) > self.config.max_file_bytes:
                self._rotate()
            assert self._file is not None
            with self._file.open("ab") as handle:
                handle.write(line)
            self._file_bytes += len(line)
            self.written_items += 1
        self._enforce_caps()

    def _rotate(self) -> None:
        files = capture_files(self.folder)
        number = int(_NAME.match(files[-1].name).group(1)) + 1 if files else 1  # type: ignore[union-attr]
        self._file = self.folder / f"capture-{number:06d}-p{os.getpid()}.jsonl"
        self._file_bytes = 0
        self._enforce_caps(reserve_files=1)

    def _enforce_caps(self, reserve_files: int = 0) -> None:
        files = capture_files(self.folder)
        sizes = {}
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                sizes[path] = path.stat().st_size
        kept = [path for path in files if path in sizes]
        total = sum(sizes.values())
        while kept and (total > self.config.max_bytes or len(kept) + reserve_files > self.config.max_files):
            oldest = kept.pop(0)
            if oldest == self._file and not reserve_files:
                break  # never delete the file being written; the next rotation makes room
            with contextlib.suppress(FileNotFoundError):
                oldest.unlink()
            total -= sizes[oldest]

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.flush()
