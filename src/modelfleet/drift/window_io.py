"""Capture files and labels → the window a retraining hook reads, with its most recent part held out.

Capture files are `capture_dir/<model>/capture-NNNNNN[-pPID].jsonl`, one CapturedItem a line (drift/capture.py).
A run snapshots them into its own folder, so the hook and the gates read a fixed window however the
capture rotates meanwhile:

- `window.jsonl`: the older (1 - holdout_fraction) of the items, one CapturedItem a line, oldest first;
- `labels.jsonl`: with labels, one `{"label": ...}` line per line of window.jsonl, in the same order;
- `holdout.jsonl` / `holdout-labels.jsonl`: the most recent items, for the gates only (the hook never sees them).

Labels are a JSON-lines file (or an http(s) URL serving one), each line `{"inputs": {...}, "label": ...}`;
a captured item takes the label whose inputs equal its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelfleet.drift.capture import read_captured
from modelfleet.drift.types import CapturedItem
from modelfleet.errors import InvalidInput, NotFound, Unavailable

WINDOW_FILE = "window.jsonl"
LABELS_FILE = "labels.jsonl"
HOLDOUT_FILE = "holdout.jsonl"
HOLDOUT_LABELS_FILE = "holdout-labels.jsonl"
_LABELS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Window:
    """A snapshot written into a run's folder: the hook's part, the held-out part, their labels."""

    train: list[CapturedItem]
    holdout: list[CapturedItem]
    train_labels: list[Any] | None
    holdout_labels: list[Any] | None
    summary: dict[str, Any]  # sha256, items, train_items, holdout_items, first_at, last_at, labels_sha256


def recent_items(folder: Path, max_items: int) -> list[CapturedItem]:
    """The most recent ``max_items`` captured items under ``folder``, oldest first (cut lines skipped)."""
    return sorted(read_captured(folder), key=lambda item: item.at)[-max_items:]


def inputs_key(inputs: dict[str, Any]) -> str:
    """The canonical text of an item's inputs, by which a label row finds its captured item.

    Numbers compare at float32 precision: a server decodes FP32 inputs, so 5.1 in a labels file and the
    5.099999904632568 it captured are one value.
    """
    return json.dumps(_float32(inputs), sort_keys=True, separators=(",", ":"))


def _float32(value: Any) -> Any:
    if isinstance(value, float):
        return float(np.float32(value))
    if isinstance(value, list):
        return [_float32(item) for item in value]
    if isinstance(value, dict):
        return {key: _float32(item) for key, item in value.items()}
    return value


def read_labels(source: str, base: Path, max_bytes: int) -> tuple[dict[str, Any], str]:
    """Labels by inputs_key from a JSON-lines file or http(s) URL, and the sha256 of the bytes read."""
    data = _labels_bytes(source, base, max_bytes)
    labels: dict[str, Any] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key, label = inputs_key(row["inputs"]), row["label"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(
                f'labels {source} line {number} is not {{"inputs": {{...}}, "label": ...}} (retrain.labels)'
            ) from None
        labels[key] = label
    return labels, hashlib.sha256(data).hexdigest()


def _labels_bytes(source: str, base: Path, max_bytes: int) -> bytes:
    too_big = f"labels {source} are over the limit of {max_bytes:,} bytes (retrain.max_labels_bytes)"
    if source.startswith(("http://", "https://")):
        try:
            with httpx.stream("GET", source, timeout=_LABELS_TIMEOUT_S) as response:
                if response.status_code != 200:
                    raise Unavailable(
                        f"labels {source} answered HTTP {response.status_code} (retrain.labels)"
                    )
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InvalidInput(too_big)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise Unavailable(f"labels {source} could not be read: {exc} (retrain.labels)") from None
    path = Path(source) if Path(source).is_absolute() else base / source
    if not path.is_file():
        raise NotFound(f"labels file {path} does not exist (retrain.labels)")
    if path.stat().st_size > max_bytes:
        raise InvalidInput(too_big)
    return path.read_bytes()


def match_labels(items: list[CapturedItem], labels: dict[str, Any], source: str) -> list[Any]:
    """Each item's label, in order; every item must have one."""
    matched = [labels.get(inputs_key(item.inputs), _MISSING) for item in items]
    missing = sum(1 for label in matched if label is _MISSING)
    if missing:
        raise InvalidInput(
            f"labels {source} do not match the captured window: {missing} of {len(items)} items have no row "
            "with the same inputs (retrain.labels)"
        )
    return matched


_MISSING = object()


def snapshot(
    items: list[CapturedItem], labels: list[Any] | None, run_dir: Path, holdout_fraction: float
) -> Window:
    """Write the window files into ``run_dir`` (see the module docstring); items oldest first."""
    holdout_items = max(1, round(len(items) * holdout_fraction))
    cut = len(items) - holdout_items
    train, holdout = items[:cut], items[cut:]
    digest = hashlib.sha256()
    for name, part in ((WINDOW_FILE, train), (HOLDOUT_FILE, holdout)):
        text = "".join(json.dumps(asdict(item), separators=(",", ":")) + "\n" for item in part)
        (run_dir / name).write_text(text, encoding="utf-8")
        digest.update(text.encode())
    labels_digest = None
    if labels is not None:
        labels_hash = hashlib.sha256()
        for name, rows in ((LABELS_FILE, labels[:cut]), (HOLDOUT_LABELS_FILE, labels[cut:])):
            text = "".join(json.dumps({"label": label}) + "\n" for label in rows)
            (run_dir / name).write_text(text, encoding="utf-8")
            labels_hash.update(text.encode())
        labels_digest = labels_hash.hexdigest()
    summary = {
        "sha256": digest.hexdigest(),
        "items": len(items),
        "train_items": len(train),
        "holdout_items": len(holdout),
        "first_at": items[0].at,
        "last_at": items[-1].at,
        "labels_sha256": labels_digest,
    }
    return Window(
        train=train,
        holdout=holdout,
        train_labels=None if labels is None else labels[:cut],
        holdout_labels=None if labels is None else labels[cut:],
        summary=summary,
    )
