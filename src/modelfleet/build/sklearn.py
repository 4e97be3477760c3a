"""scikit-learn estimator (skops, or trusted pickle/joblib) → ONNX graph with V2-friendly outputs.

skops files are loaded with skops' trusted-types mechanism: the file lists the types it needs, we
accept standard scikit-learn types and the ones the user names with `--trust`, and refuse the rest
(they could be any importable callable). Pickle and joblib files run code when loaded, so they are
refused unless the user passes `--trust-pickle`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel, row_batchings
from modelfleet.build.messages import first_line
from modelfleet.build.options import MAX_PROBABILITY_DIFF, BuildOptions
from modelfleet.build.sources import SklearnFormat
from modelfleet.build.verify import agreement_check, max_abs_diff_check, run_session
from modelfleet.errors import InvalidInput
from modelfleet.manifest import TensorField, Verification
from modelfleet.types import Datatype, Progress

ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}
VERIFICATION_ROWS = 64
CALIBRATION_ROWS = 32
_VERIFICATION_SEED = 20240601
_CALIBRATION_SEED = 20240602
_STANDARD_TYPE_PREFIX = "sklearn."


@dataclass(frozen=True, slots=True)
class LoadedEstimator:
    estimator: Any
    trusted_types: list[str]  # non-default types the load accepted (recorded in the manifest)


def load_estimator(path: Path, file_format: SklearnFormat, options: BuildOptions) -> LoadedEstimator:
    """Load a fitted estimator, applying the trust rules above."""
    if file_format == "pickle":
        if not options.trust_pickle:
            raise InvalidInput(
                f"{path.name} is a pickle/joblib file and loading it runs any code inside it; re-save the "
                "model with skops (skops.io.dump) or pass --trust-pickle if you trust who made the file"
            )
        import joblib

        try:
            estimator = joblib.load(path)
        except Exception as exc:
            raise InvalidInput(
                f"{path.name} is not a readable pickle/joblib file: {first_line(exc)}"
            ) from None
        return LoadedEstimator(_check_estimator(estimator, path), ["(pickle: all types trusted)"])
    import skops.io

    try:
        needed = list(skops.io.get_untrusted_types(file=path))
    except Exception as exc:
        raise InvalidInput(f"{path.name} is not a valid skops file: {first_line(exc)}") from None
    refused = sorted(
        t for t in needed if not t.startswith(_STANDARD_TYPE_PREFIX) and t not in options.trusted_types
    )
    if refused and not options.trust_pickle:
        raise InvalidInput(
            f"{path.name} needs types that are not standard scikit-learn: {', '.join(refused)}; "
            "check them, then pass --trust TYPE for each (or --trust-pickle to trust all)"
        )
    try:
        estimator = skops.io.load(path, trusted=needed)
    except Exception as exc:
        raise InvalidInput(f"{path.name} is not a valid skops file: {first_line(exc)}") from None
    return LoadedEstimator(_check_estimator(estimator, path), sorted(needed))


def export_sklearn(
    path: Path, file_format: SklearnFormat, work_dir: Path, options: BuildOptions, report: Progress
) -> ExportedModel:
    report("loading source")
    loaded = load_estimator(path, file_format, options)
    estimator = loaded.estimator
    n_features = int(estimator.n_features_in_)
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    _convert(estimator, n_features, onnx_path)
    verification_rows = (
        load_rows(options.samples, n_features)
        if options.samples
        else sample_rows(estimator, VERIFICATION_ROWS, _VERIFICATION_SEED)
    )
    calibration = row_batchings({"input": sample_rows(estimator, CALIBRATION_ROWS, _CALIBRATION_SEED)})
    extra: dict[str, Any] = {
        "estimator": type(estimator).__name__,
        "n_features": n_features,
        "source_format": file_format,
        "trusted_types": loaded.trusted_types,
        "onnx_opset": ONNX_OPSET,
        "verification_samples": "custom" if options.samples else f"{len(verification_rows)} fixed-seed rows",
    }
    inputs = [TensorField(name="input", datatype=Datatype.FP32, shape=[-1, n_features])]
    libraries = ("scikit-learn", "skl2onnx", "skops", "onnx")
    if _is_classifier(estimator):
        label_type = _label_datatype(estimator, path)
        n_classes = len(estimator.classes_)
        extra["classes"] = [c.item() if hasattr(c, "item") else str(c) for c in estimator.classes_]

        def verify_classifier(session: Any, artifact_dir: Path) -> list[Verification]:
            got = run_session(session, {"input": verification_rows})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "X does not have valid feature names"
                labels = estimator.predict(verification_rows)
                probabilities = estimator.predict_proba(verification_rows)
            expected_labels = labels.astype(str) if label_type is Datatype.BYTES else labels
            got_labels = got["label"].astype(str) if label_type is Datatype.BYTES else got["label"]
            return [
                agreement_check(expected_labels, got_labels),
                max_abs_diff_check(
                    probabilities, got["probabilities"], MAX_PROBABILITY_DIFF, "max_abs_probability_diff"
                ),
            ]

        return ExportedModel(
            onnx_path=onnx_path,
            task="classification",
            inputs=inputs,
            outputs=[
                TensorField(name="label", datatype=label_type, shape=[-1]),
                TensorField(name="probabilities", datatype=Datatype.FP32, shape=[-1, n_classes]),
            ],
            verify=verify_classifier,
            calibration_feeds=calibration,
            libraries=libraries,
            extra=extra,
        )
    output_name, output_shape = _regression_output(onnx_path)

    def verify_regressor(session: Any, artifact_dir: Path) -> list[Verification]:
        got = run_session(session, {"input": verification_rows})[output_name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.asarray(estimator.predict(verification_rows), dtype=np.float64).reshape(got.shape)
        # float32 carries ~7 significant digits: scale the tolerance with the predictions' magnitude.
        scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
        return [max_abs_diff_check(expected, got, MAX_PROBABILITY_DIFF * scale, "max_abs_prediction_diff")]

    return ExportedModel(
        onnx_path=onnx_path,
        task="regression",
        inputs=inputs,
        outputs=[
            TensorField(
                name="prediction",
                datatype=Datatype.FP32,
                shape=output_shape,
                onnx_name=None if output_name == "prediction" else output_name,
            )
        ],
        verify=verify_regressor,
        calibration_feeds=calibration,
        libraries=libraries,
        extra=extra,
    )


def sample_rows(estimator: Any, count: int, seed: int) -> Array:
    """Fixed-seed rows shaped like the training data, as far as the estimator recorded its statistics.

    A leading StandardScaler records each feature's mean and spread; without one we fall back to a
    standard normal, which still exercises every weight of the model.
    """
    n_features = int(estimator.n_features_in_)
    loc, scale = np.zeros(n_features), np.ones(n_features)
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    mean, spread = getattr(first, "mean_", None), getattr(first, "scale_", None)
    if isinstance(mean, np.ndarray) and isinstance(spread, np.ndarray) and mean.shape == (n_features,):
        loc, scale = mean, spread
    rng = np.random.default_rng(seed)
    rows: Array = rng.normal(loc, scale, size=(count, n_features)).astype(np.float32)
    return rows


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


def _check_estimator(estimator: Any, path: Path) -> Any:
    from sklearn.base import BaseEstimator, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(estimator, BaseEstimator):
        raise InvalidInput(f"{path.name} holds a {type(estimator).__name__}, not a scikit-learn estimator")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise InvalidInput(
            f"{path.name} holds an unfitted {type(estimator).__name__}; fit it before building"
        ) from None
    if not (_is_classifier(estimator) or is_regressor(estimator)):
        raise InvalidInput(
            f"{type(estimator).__name__} is neither a classifier nor a regressor; only those are supported"
        )
    if not isinstance(getattr(estimator, "n_features_in_", None), int):
        raise InvalidInput(
            f"{type(estimator).__name__} does not record n_features_in_; fit it on a 2-D array"
        )
    if _is_classifier(estimator) and not hasattr(estimator, "predict_proba"):
        raise InvalidInput(
            f"{type(estimator).__name__} has no predict_proba; use a classifier that gives probabilities "
            "(e.g. SVC(probability=True))"
        )
    return estimator


def _is_classifier(estimator: Any) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(estimator))


def _label_datatype(estimator: Any, path: Path) -> Datatype:
    classes = np.asarray(estimator.classes_)
    if classes.dtype.kind in "OUS":
        if not all(isinstance(c, str) for c in classes.tolist()):
            raise InvalidInput(f"{path.name}: class labels mix types; use all-integer or all-string labels")
        return Datatype.BYTES
    if classes.dtype.kind == "f" and not np.all(classes == np.round(classes)):
        raise InvalidInput(f"{path.name}: fractional class labels are not supported; encode them as integers")
    if classes.dtype.kind not in "biuf":
        raise InvalidInput(f"{path.name}: class labels of dtype {classes.dtype} are not supported")
    return Datatype.INT64


def _convert(estimator: Any, n_features: int, destination: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(final): {"zipmap": False}} if _is_classifier(estimator) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_sklearn(
                estimator,
                initial_types=[("input", FloatTensorType([None, n_features]))],
                options=options,
                target_opset=ONNX_OPSET,
            )
    except Exception as exc:
        raise InvalidInput(f"skl2onnx cannot convert {type(estimator).__name__}: {first_line(exc)}") from None
    destination.write_bytes(model.SerializeToString())


def _regression_output(onnx_path: Path) -> tuple[str, list[int]]:
    """The graph's prediction output and its V2 shape: [-1] or [-1, targets]."""
    import onnx

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if len(dims) == 1:
        return output.name, [-1]
    width = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value > 0 else -1
    return output.name, [-1, int(width)]
