"""Tabular models (scikit-learn, XGBoost, LightGBM): their V2 interface and verification against the framework.

Every tabular artifact takes `input` FP32 `[-1, n_features]`. A classifier answers `label` and
`probabilities` `[-1, n_classes]`; a regressor answers `prediction`. Verification runs the same float32
rows (what a V2 client sends) through the framework and the artifact.

Tolerance. The graph computes in float32 where the frameworks use float64 in places: a tree threshold
rounded to float32 can send a row down the other branch, and summing class probabilities in float32
can break a near-tie the other way. Measured on a 5-tree scikit-learn random forest (3 random classes,
min_samples_leaf=2, 64 fixed-seed rows): one row's label differed (agreement 0.984375) while every
probability was within 8e-8, because two classes tied up to rounding. `BuildOptions.min_label_agreement`
(`--min-label-agreement`, default 1.0) is the lowest fraction of rows that must agree; the rows beyond
it, the worst ones, are excused from the probability and prediction checks as well, since a flipped
branch moves those by a whole leaf's value. The measured figures are recorded whatever the threshold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel, row_batchings
from modelfleet.build.messages import first_line
from modelfleet.build.options import MAX_PROBABILITY_DIFF, BuildOptions
from modelfleet.build.verify import require_passed, run_session
from modelfleet.errors import InvalidInput, VerificationFailed
from modelfleet.manifest import TensorField, Verification
from modelfleet.types import Datatype

VERIFICATION_ROWS = 64
CALIBRATION_ROWS = 32
VERIFICATION_SEED = 20240601
CALIBRATION_SEED = 20240602
INPUT_NAME = "input"
# A failed difference check on at most this fraction of rows reads as flipped splits, above it as rounding.
_FEW_ROWS = 0.1

# The framework's answers on rows: (labels, probabilities [n, n_classes]) or predictions.
ClassifierReference = Callable[[Array], tuple[Array, Array]]
RegressorReference = Callable[[Array], Array]


@dataclass(slots=True)
class TabularGraph:
    """An exported tabular graph and what the build knows about its source."""

    onnx_path: Path
    n_features: int
    verification_rows: Array  # float32
    calibration_rows: Array  # float32, never used to verify
    libraries: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    detected: str = ""


def classifier_export(
    graph: TabularGraph,
    options: BuildOptions,
    reference: ClassifierReference,
    label_type: Datatype,
    n_classes: int,
) -> ExportedModel:
    """A classification artifact (graph outputs `label`, `probabilities`) verified against `reference`."""
    rows = graph.verification_rows

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        got = run_session(session, {INPUT_NAME: rows})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "X does not have valid feature names"
            labels, probabilities = reference(rows)
        if label_type is Datatype.BYTES:
            expected_labels, got_labels = labels.astype(str), got["label"].astype(str)
        else:
            expected_labels, got_labels = labels, got["label"]
        checks = [
            label_agreement_check(expected_labels, got_labels, options.min_label_agreement),
            tolerant_diff_check(
                probabilities,
                got["probabilities"],
                options.max_probability_diff,
                "max_abs_probability_diff",
                options.min_label_agreement,
            ),
        ]
        require_passed(checks, tolerance_hint(checks, options))
        return checks

    return ExportedModel(
        onnx_path=graph.onnx_path,
        task="classification",
        inputs=_inputs(graph),
        outputs=[
            TensorField(name="label", datatype=label_type, shape=[-1]),
            TensorField(name="probabilities", datatype=Datatype.FP32, shape=[-1, n_classes]),
        ],
        verify=verify,
        calibration_feeds=row_batchings({INPUT_NAME: graph.calibration_rows}),
        libraries=graph.libraries,
        extra=graph.extra,
        detected=graph.detected,
    )


def regressor_export(
    graph: TabularGraph, options: BuildOptions, reference: RegressorReference
) -> ExportedModel:
    """A regression artifact (the graph's first output as `prediction`) verified against `reference`."""
    rows = graph.verification_rows
    output_name, output_shape = regression_output(graph.onnx_path)

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        got = run_session(session, {INPUT_NAME: rows})[output_name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.asarray(reference(rows), dtype=np.float64).reshape(got.shape)
        # float32 carries ~7 significant digits: scale the tolerance with the predictions' magnitude.
        scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
        checks = [
            tolerant_diff_check(
                expected,
                got,
                MAX_PROBABILITY_DIFF * scale,
                "max_abs_prediction_diff",
                options.min_label_agreement,
            )
        ]
        require_passed(checks, tolerance_hint(checks, options))
        return checks

    return ExportedModel(
        onnx_path=graph.onnx_path,
        task="regression",
        inputs=_inputs(graph),
        outputs=[
            TensorField(
                name="prediction",
                datatype=Datatype.FP32,
                shape=output_shape,
                onnx_name=None if output_name == "prediction" else output_name,
            )
        ],
        verify=verify,
        calibration_feeds=row_batchings({INPUT_NAME: graph.calibration_rows}),
        libraries=graph.libraries,
        extra=graph.extra,
        detected=graph.detected,
    )


def label_agreement_check(reference: Array, candidate: Array, min_agreement: float) -> Verification:
    """The fraction of rows whose label equals the framework's must reach `min_agreement`."""
    ref, got = np.asarray(reference).reshape(-1), np.asarray(candidate).reshape(-1)
    if ref.shape != got.shape:
        raise VerificationFailed(f"output shapes differ: source {ref.shape}, artifact {got.shape}")
    same = ref == got
    value = float(same.mean()) if len(same) else 1.0
    return Verification(
        samples=len(same),
        metric="label_agreement",
        value=value,
        threshold=min_agreement,
        passed=value >= min_agreement,
        details={"mismatches": float(len(same) - int(same.sum()))},
    )


def tolerant_diff_check(
    reference: Array, candidate: Array, threshold: float, metric: str, min_agreement: float
) -> Verification:
    """Largest absolute difference over the rows `min_agreement` leaves in, which must not exceed `threshold`.

    The excused rows are the ones with the largest differences, at most floor((1 - min_agreement) × rows);
    with the default 1.0 none are, and the value is the plain maximum over every element.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise VerificationFailed(f"output shapes differ: source {ref.shape}, artifact {got.shape}")
    rows = len(ref)
    per_row = np.abs(ref - got).reshape(rows, -1).max(axis=1) if ref.size else np.zeros(rows)
    per_row = np.nan_to_num(per_row, nan=np.inf)
    excused = excused_rows(rows, min_agreement)
    kept = np.sort(per_row)[: rows - excused]
    value = float(kept.max()) if kept.size else 0.0
    return Verification(
        samples=rows,
        metric=metric,
        value=value,
        threshold=threshold,
        passed=value <= threshold,
        details={
            "max_abs_diff_all_rows": float(per_row.max()) if rows else 0.0,
            "rows_within_threshold": float(np.count_nonzero(per_row <= threshold)),
            "excused_rows": float(excused),
        },
    )


def excused_rows(rows: int, min_agreement: float) -> int:
    """How many of `rows` may disagree at `min_agreement` (1e-9 absorbs 0.98 × 100 ≠ 98 in binary)."""
    return math.floor((1.0 - min_agreement) * rows + 1e-9)


def tolerance_hint(checks: list[Verification], options: BuildOptions) -> str:
    """What the failed checks measured and which flag would accept it (empty when every check passed)."""
    parts = []
    for check in checks:
        if check.passed:
            continue
        rows = check.samples
        if check.metric == "label_agreement":
            mismatches = int(check.details["mismatches"])
            parts.append(
                f"{mismatches} of {rows} rows got another label than the framework (float32 thresholds and "
                "sums in the graph can flip a row at a split boundary or a near-tie of classes); to accept "
                f"the measured agreement, pass --min-label-agreement {_floor3(check.value):g} "
                f"(now {options.min_label_agreement:g})"
            )
            continue
        over = rows - int(check.details["rows_within_threshold"])
        text = f"{over} of {rows} rows differ from the framework by more than {check.threshold:.3g}"
        if over <= rows * _FEW_ROWS:
            text += (
                " (a few rows far off are flipped splits); to excuse them, pass --min-label-agreement "
                f"{_floor3((rows - over) / rows):g} (now {options.min_label_agreement:g})"
            )
        elif check.metric == "max_abs_probability_diff":
            text += " (many rows off is float32 rounding, not flipped splits); raise --max-probability-diff"
        else:
            text += " (many rows off: the graph does not compute what the model does)"
        parts.append(text)
    return "; ".join(parts)


def _floor3(fraction: float) -> float:
    """Rounded down to 3 decimals, so that passing it back accepts the measured fraction."""
    return math.floor(fraction * 1000) / 1000


def load_rows(path: Path, n_features: int) -> Array:
    """Verification rows from a .npy array or a numeric .csv (a non-numeric header line is skipped)."""
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            rows = np.load(path, allow_pickle=False)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = np.genfromtxt(path, delimiter=",", dtype=np.float64)
            if rows.ndim == 2 and np.isnan(rows[0]).all():
                rows = rows[1:]
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"samples file {path} is not a numeric .npy or .csv file: {first_line(exc)}"
        ) from None
    rows = np.atleast_2d(rows)
    if rows.ndim != 2 or rows.shape[1] != n_features or len(rows) == 0:
        raise InvalidInput(
            f"samples file {path} must hold rows of {n_features} numbers, got shape {list(rows.shape)}"
        )
    if not np.all(np.isfinite(rows)):
        raise InvalidInput(f"samples file {path} holds missing or non-finite values")
    result: Array = rows.astype(np.float32)
    return result


def regression_output(onnx_path: Path) -> tuple[str, list[int]]:
    """The graph's prediction output and its V2 shape: [-1] or [-1, targets]."""
    import onnx

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if len(dims) == 1:
        return output.name, [-1]
    width = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value > 0 else -1
    return output.name, [-1, int(width)]


def _inputs(graph: TabularGraph) -> list[TensorField]:
    return [TensorField(name=INPUT_NAME, datatype=Datatype.FP32, shape=[-1, graph.n_features])]
