"""A model's reference window: read from a file the user gives (or the artifact's own), checked against the model's inputs.

Formats: `.jsonl` (one item per line: `{input name: value}`, or a capture line with `inputs` and `outputs`),
`.csv` (rows of the model's one 2-D input, an optional header line) and `.npy` (the one input, first axis
the items). A file whose tensors do not fit the model's inputs is refused with one line naming the setting.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from modelfleet.drift.sampling import Window
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.manifest import DRIFT_REFERENCE_FILE
from modelfleet.types import Datatype, TensorSpec

ARTIFACT_REFERENCE_FILE = DRIFT_REFERENCE_FILE
_SETTING = "model drift.reference.path"


def artifact_reference(
    artifact_dir: Path | None, specs: Sequence[TensorSpec], max_items: int
) -> Window | None:
    """The build's reference (`drift_reference.jsonl` in the artifact folder) when it has one."""
    if artifact_dir is None or not (artifact_dir / ARTIFACT_REFERENCE_FILE).is_file():
        return None
    return load_reference(artifact_dir / ARTIFACT_REFERENCE_FILE, specs, max_items)


def load_reference(path: Path, specs: Sequence[TensorSpec], max_items: int) -> Window:
    """The reference in `path`, subsampled to `max_items` (fixed seed); InvalidInput when it does not fit."""
    if not path.is_file():
        raise NotFound(f"drift reference {path} does not exist ({_SETTING})")
    suffix = path.suffix.lower()
    inputs: dict[str, Any]
    if suffix == ".jsonl":
        inputs, outputs = _read_jsonl(path)
    elif suffix == ".csv":
        inputs, outputs = {_only_2d_input(path, specs).name: _read_csv(path)}, {}
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidInput(
                f"drift reference {path} is not a readable .npy file: {exc} ({_SETTING})"
            ) from None
        inputs, outputs = {_only_input(path, specs).name: array}, {}
    else:
        raise InvalidInput(f"drift reference {path} must be a .jsonl, .csv or .npy file ({_SETTING})")
    checked = check_inputs(path, inputs, specs)
    items = next(iter(checked.values())).shape[0]
    if any(array.shape[0] != items for array in outputs.values()):
        raise InvalidInput(f"drift reference {path}: outputs do not hold one value per item ({_SETTING})")
    return Window(checked, outputs, np.zeros(items)).subsample(max_items)


def check_inputs(
    path: Path, given: dict[str, Any], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray[Any, Any]]:
    """Every required input present, each of its spec's shape and type; the arrays converted to it."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise InvalidInput(
            f"drift reference {path}: the model has no input {unknown[0]!r}; it takes {sorted(by_name)} ({_SETTING})"
        )
    checked: dict[str, np.ndarray[Any, Any]] = {}
    items = -1
    for name, spec in by_name.items():
        if name not in given:
            if spec.optional:
                continue
            raise InvalidInput(f"drift reference {path} has no input {name!r} ({_SETTING})")
        try:
            array = np.asarray(given[name], dtype=object if spec.datatype is Datatype.BYTES else None)
        except ValueError:  # ragged rows
            raise InvalidInput(
                f"drift reference {path}: input {name!r} has items of different shapes ({_SETTING})"
            ) from None
        if not spec.accepts_shape(tuple(array.shape)) or array.shape[0] < 1:
            raise InvalidInput(
                f"drift reference {path}: input {name!r} must have shape {list(spec.shape)} (-1 = any, first "
                f"axis the items), got {list(array.shape)} ({_SETTING})"
            )
        if items not in (-1, array.shape[0]):
            raise InvalidInput(f"drift reference {path}: inputs hold different numbers of items ({_SETTING})")
        items = array.shape[0]
        if spec.datatype is not Datatype.BYTES:
            try:
                array = array.astype(spec.datatype.numpy_dtype)
            except (ValueError, TypeError):
                raise InvalidInput(
                    f"drift reference {path}: input {name!r} must hold {spec.datatype.value} numbers ({_SETTING})"
                ) from None
        checked[name] = array
    if not checked:
        raise InvalidInput(f"drift reference {path} holds no input the model takes ({_SETTING})")
    return checked


def _only_input(path: Path, specs: Sequence[TensorSpec]) -> TensorSpec:
    if len(specs) != 1:
        raise InvalidInput(
            f"drift reference {path}: a {path.suffix} file fits a model of one input; this one takes "
            f"{[spec.name for spec in specs]} (use .jsonl) ({_SETTING})"
        )
    return specs[0]


def _only_2d_input(path: Path, specs: Sequence[TensorSpec]) -> TensorSpec:
    spec = _only_input(path, specs)
    if len(spec.shape) != 2 or spec.datatype is Datatype.BYTES:
        raise InvalidInput(
            f"drift reference {path}: a .csv file fits a model whose input is a 2-D number tensor; "
            f"{spec.name!r} is {spec.datatype.value}{list(spec.shape)} (use .jsonl) ({_SETTING})"
        )
    return spec


def _read_csv(path: Path) -> np.ndarray[Any, Any]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header line
    try:
        return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError:
        raise InvalidInput(f"drift reference {path} has a row that is not all numbers ({_SETTING})") from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _read_jsonl(path: Path) -> tuple[dict[str, list[Any]], dict[str, np.ndarray[Any, Any]]]:
    inputs: dict[str, list[Any]] = {}
    outputs: dict[str, list[Any]] = {}
    count = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidInput(f"drift reference {path} line {number} is not JSON ({_SETTING})") from None
            if not isinstance(raw, dict):
                raise InvalidInput(f"drift reference {path} line {number} is not a JSON object ({_SETTING})")
            item_inputs = raw.get("inputs", raw) if isinstance(raw.get("inputs"), dict) else raw
            for name, value in item_inputs.items():
                inputs.setdefault(name, []).append(value)
            for name, value in dict(raw.get("outputs") or {}).items():
                outputs.setdefault(name, []).append(value)
            count += 1
    if count == 0:
        raise InvalidInput(f"drift reference {path} holds no items ({_SETTING})")
    if any(len(values) != count for values in inputs.values()):
        raise InvalidInput(f"drift reference {path}: not every line has every input ({_SETTING})")
    # Outputs count only when every line has them (a capture file's do); else the server computes them.
    complete = {name: np.asarray(values) for name, values in outputs.items() if len(values) == count}
    return inputs, complete
