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

from modelfleet.build.exported import Array, ExportedModel
from modelfleet.build.messages import first_line
from modelfleet.build.options import BuildOptions
from modelfleet.build.sources import SklearnFormat
from modelfleet.build.tabular import (
    CALIBRATION_ROWS,
    CALIBRATION_SEED,
    VERIFICATION_ROWS,
    VERIFICATION_SEED,
    TabularGraph,
    classifier_export,
    load_rows,
    regressor_export,
)
from modelfleet.errors import InvalidInput
from modelfleet.types import Datatype, Progress

ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}
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
        else sample_rows(estimator, VERIFICATION_ROWS, VERIFICATION_SEED)
    )
    graph = TabularGraph(
        onnx_path=onnx_path,
        n_features=n_features,
        verification_rows=verification_rows,
        calibration_rows=sample_rows(estimator, CALIBRATION_ROWS, CALIBRATION_SEED),
        libraries=("scikit-learn", "skl2onnx", "skops", "onnx"),
        extra={
            "estimator": type(estimator).__name__,
            "n_features": n_features,
            "source_format": file_format,
            "trusted_types": loaded.trusted_types,
            "onnx_opset": ONNX_OPSET,
            "verification_samples": "custom"
            if options.samples
            else f"{len(verification_rows)} fixed-seed rows",
        },
    )
    if _is_classifier(estimator):
        graph.extra["classes"] = [c.item() if hasattr(c, "item") else str(c) for c in estimator.classes_]

        def reference(rows: Array) -> tuple[Array, Array]:
            return estimator.predict(rows), estimator.predict_proba(rows)

        label_type = _label_datatype(estimator, path)
        return classifier_export(graph, options, reference, label_type, len(estimator.classes_))
    return regressor_export(graph, options, estimator.predict)


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
