"""XGBoost and LightGBM models in their own saved formats → ONNX through onnxmltools.

Loading never unpickles: XGBoost reads its JSON/UBJSON model, LightGBM its text model. The objective
decides the task: binary:logistic, multi:softprob, binary, multiclass are classifiers (labels are
the class indices 0..n-1, as both libraries train them); reg:*, count:poisson and LightGBM's regression
objectives are regressors. Verification rows are drawn uniformly over each feature's range as the model
knows it (LightGBM records the training minimum and maximum; for XGBoost the span of its split
thresholds), widened by a quarter on each side. Measured on a 20-round, 3-class, depth-3 XGBoost model
trained on features around 5000 ± 1000: 64 such rows reach 5.4 distinct leaves per tree (its 200
training rows 5.5), where 64 standard-normal rows, scikit-learn's fallback, reach 1.0 (all one leaf).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelfleet.build.exported import Array, ExportedModel
from modelfleet.build.messages import first_line
from modelfleet.build.options import BuildOptions
from modelfleet.build.tabular import (
    CALIBRATION_ROWS,
    CALIBRATION_SEED,
    INPUT_NAME,
    VERIFICATION_ROWS,
    VERIFICATION_SEED,
    TabularGraph,
    classifier_export,
    load_rows,
    regressor_export,
)
from modelfleet.errors import InvalidInput
from modelfleet.types import Datatype, Progress

TreeFormat = Literal["xgboost", "lightgbm"]
# onnxmltools 1.16 converts tree ensembles up to opset 15 (it refuses 17).
ONNX_OPSET = 15
_XGBOOST_CLASSIFIERS = ("binary:logistic", "multi:softprob")
_XGBOOST_REGRESSORS = ("reg:", "count:poisson")
_LIGHTGBM_CLASSIFIERS = ("binary", "multiclass")
# onnxmltools 1.16 refuses fair and mape; multiclassova's independent sigmoids it would turn into a softmax.
_LIGHTGBM_REGRESSORS = ("regression", "regression_l1", "huber", "quantile", "poisson", "gamma", "tweedie")
_RANGE_MARGIN = 0.25  # of a feature's span, added on each side
_UNUSED_FEATURE_RANGE = (-1.0, 1.0)  # a feature no tree splits on cannot change the output


def export_boosted_trees(
    path: Path, tree_format: TreeFormat, work_dir: Path, options: BuildOptions, report: Progress
) -> ExportedModel:
    report("loading source")
    model: _XGBoostModel | _LightGBMModel = (
        _XGBoostModel(path) if tree_format == "xgboost" else _LightGBMModel(path)
    )
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    model.convert(onnx_path)
    verification_rows = (
        load_rows(options.samples, model.n_features)
        if options.samples
        else range_rows(model.feature_ranges(), VERIFICATION_ROWS, VERIFICATION_SEED)
    )
    libraries = ("xgboost-cpu", "xgboost") if tree_format == "xgboost" else ("lightgbm",)
    graph = TabularGraph(
        onnx_path=onnx_path,
        n_features=model.n_features,
        verification_rows=verification_rows,
        calibration_rows=range_rows(model.feature_ranges(), CALIBRATION_ROWS, CALIBRATION_SEED),
        libraries=(*libraries, "onnxmltools", "onnx"),
        extra={
            "objective": model.objective,
            "n_features": model.n_features,
            "n_trees": model.n_trees,
            "source_format": model.source_format,
            "onnx_opset": ONNX_OPSET,
            "verification_samples": "custom"
            if options.samples
            else f"{len(verification_rows)} fixed-seed rows",
        },
        detected=f"{model.framework} {model.objective} model ({model.n_trees} trees)",
    )
    if model.feature_names is not None:
        graph.extra["feature_names"] = model.feature_names
    if model.best_iteration is not None:
        graph.extra["best_iteration"] = model.best_iteration
    if model.n_classes:
        graph.extra["classes"] = list(range(model.n_classes))
        return classifier_export(graph, options, model.classify, Datatype.INT64, model.n_classes)
    return regressor_export(graph, options, model.predict)


def range_rows(ranges: list[tuple[float, float]], count: int, seed: int) -> Array:
    """Fixed-seed float32 rows, each feature uniform over its (low, high) widened by the margin."""
    low = np.array([lo for lo, _ in ranges], dtype=np.float64)
    high = np.array([hi for _, hi in ranges], dtype=np.float64)
    span = high - low
    margin = np.where(span > 0, span * _RANGE_MARGIN, np.maximum(np.abs(low) * _RANGE_MARGIN, 1.0))
    rng = np.random.default_rng(seed)
    rows: Array = rng.uniform(low - margin, high + margin, size=(count, len(ranges))).astype(np.float32)
    return rows


class _XGBoostModel:
    framework = "XGBoost"

    def __init__(self, path: Path) -> None:
        import xgboost as xgb

        self._xgb = xgb
        try:
            booster = xgb.Booster(model_file=str(path))
            config = json.loads(booster.save_config())
        except Exception as exc:  # XGBoostError and JSON errors alike: the message is what matters
            raise InvalidInput(f"{path.name} is not a readable XGBoost model: {first_line(exc)}") from None
        learner = config["learner"]
        self.objective = str(learner["learner_train_param"]["objective"])
        with path.open("rb") as handle:
            self.source_format = "ubj" if re.match(rb"\{[iUIlL]", handle.read(2)) else "json"
        if learner.get("gradient_booster", {}).get("name", "gbtree") not in ("gbtree", "dart"):
            raise InvalidInput(
                f"{path.name}: only tree boosters (gbtree, dart) convert to ONNX, not "
                f"{learner['gradient_booster']['name']}"
            )
        if self.objective in _XGBOOST_CLASSIFIERS:
            self.n_classes = max(2, int(learner["learner_model_param"].get("num_class", "0")))
        elif self.objective.startswith(_XGBOOST_REGRESSORS) and self.objective != "reg:logistic":
            self.n_classes = 0
        else:
            raise InvalidInput(
                f"{path.name}: XGBoost objective {self.objective} is not supported; supported: "
                f"{', '.join(_XGBOOST_CLASSIFIERS)} (classification), reg:* except reg:logistic and "
                "count:poisson (regression)"
            )
        # An early-stopped model keeps every tree it grew and records the best round; XGBClassifier and
        # XGBRegressor predict with the trees up to it (measured: 0.19 apart in probability on a model
        # stopped at round 3 of 7), so that is the model to serve. LightGBM saves only those trees.
        best = booster.attr("best_iteration")
        if best is not None:
            booster = booster[: int(best) + 1]
        self.best_iteration = None if best is None else int(best)
        # onnxmltools expects features named f0, f1, ...; the names are recorded, the graph uses positions.
        names = booster.feature_names
        self.feature_names = None if names is None else list(names)
        booster.feature_names = None
        booster.feature_types = None
        self._booster = booster
        self.n_features = int(booster.num_features())
        self._trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
        self.n_trees = len(self._trees)

    def convert(self, destination: Path) -> None:
        from onnxmltools import convert_xgboost

        _write(
            lambda types: convert_xgboost(self._booster, initial_types=types, target_opset=ONNX_OPSET),
            self.n_features,
            destination,
            "XGBoost",
        )

    def feature_ranges(self) -> list[tuple[float, float]]:
        thresholds: list[list[float]] = [[] for _ in range(self.n_features)]
        for tree in self._trees:
            for feature, condition, left in zip(
                tree["split_indices"], tree["split_conditions"], tree["left_children"], strict=True
            ):
                if left != -1:  # an inner node; leaves keep their value in split_conditions
                    thresholds[feature].append(float(condition))
        return [(min(t), max(t)) if t else _UNUSED_FEATURE_RANGE for t in thresholds]

    def classify(self, rows: Array) -> tuple[Array, Array]:
        return _labelled(self._booster.predict(self._xgb.DMatrix(rows)))

    def predict(self, rows: Array) -> Array:
        return np.asarray(self._booster.predict(self._xgb.DMatrix(rows)))


class _LightGBMModel:
    framework = "LightGBM"
    source_format = "text"

    def __init__(self, path: Path) -> None:
        import lightgbm as lgb

        try:
            with _native_stderr_discarded():
                self._booster = lgb.Booster(model_file=str(path))
                dump = self._booster.dump_model()
        except Exception as exc:  # LightGBMError on a broken file
            raise InvalidInput(f"{path.name} is not a readable LightGBM model: {first_line(exc)}") from None
        self.objective = str(dump["objective"]).split(" ")[0]  # e.g. "multiclass num_class:3"
        if self.objective in _LIGHTGBM_CLASSIFIERS:
            self.n_classes = max(2, int(dump["num_class"]))
        elif self.objective in _LIGHTGBM_REGRESSORS:
            self.n_classes = 0
        else:
            raise InvalidInput(
                f"{path.name}: LightGBM objective {self.objective} is not supported; supported: "
                f"{', '.join(_LIGHTGBM_CLASSIFIERS)} (classification), {', '.join(_LIGHTGBM_REGRESSORS)} "
                "(regression)"
            )
        self.n_features = int(self._booster.num_feature())
        self.n_trees = int(self._booster.num_trees())
        self._infos: dict[str, Any] = dump["feature_infos"]
        self._names: list[str] = list(dump["feature_names"])
        defaults = [f"Column_{i}" for i in range(len(self._names))]
        self.feature_names = None if self._names == defaults else self._names
        self.best_iteration = None  # LightGBM saves the trees up to its best iteration only

    def convert(self, destination: Path) -> None:
        from onnxmltools import convert_lightgbm

        _write(
            lambda types: convert_lightgbm(
                self._booster, initial_types=types, target_opset=ONNX_OPSET, zipmap=False
            ),
            self.n_features,
            destination,
            "LightGBM",
        )

    def feature_ranges(self) -> list[tuple[float, float]]:
        ranges = []
        for name in self._names:
            info = self._infos.get(name)
            # A numeric feature records its training min and max; an unused or categorical one does not.
            if isinstance(info, dict) and "min_value" in info and "max_value" in info:
                ranges.append((float(info["min_value"]), float(info["max_value"])))
            else:
                ranges.append(_UNUSED_FEATURE_RANGE)
        return ranges

    def classify(self, rows: Array) -> tuple[Array, Array]:
        return _labelled(self._booster.predict(rows))

    def predict(self, rows: Array) -> Array:
        return np.asarray(self._booster.predict(rows))


def _labelled(raw: Any) -> tuple[Array, Array]:
    """Labels and class probabilities from a booster's output: P(class 1) for binary models, else [n, k]."""
    probabilities = np.asarray(raw, dtype=np.float64)
    if probabilities.ndim == 1:
        probabilities = np.stack([1.0 - probabilities, probabilities], axis=1)
    return probabilities.argmax(axis=1), probabilities


@contextlib.contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """Discard what native code writes to file descriptor 2 meanwhile.

    LightGBM's C++ Log::Fatal writes its message ("[LightGBM] [Fatal] Model file doesn't specify the
    label index" on a cut file) straight to stderr before it raises, past Python's sys.stderr and
    lightgbm.register_logger; the same text reaches us in the exception, and the build reports it once.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _write(convert: Any, n_features: int, destination: Path, framework: str) -> None:
    """Run a converter and save its graph with a dynamic batch axis on every output."""
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert([(INPUT_NAME, FloatTensorType([None, n_features]))])
    except Exception as exc:
        raise InvalidInput(f"onnxmltools cannot convert this {framework} model: {first_line(exc)}") from None
    # LightGBM's converter declares `label` as shape [1] though it holds one label per row.
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    destination.write_bytes(model.SerializeToString())
