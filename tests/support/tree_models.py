"""Small tree ensembles trained on the spot: XGBoost and LightGBM in their own formats, and a forest whose
float32 graph breaks one near-tie differently from scikit-learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ROWS = 200
FEATURES = 6
TREES = 20


def training_data(seed: int = 0) -> tuple[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]]:
    """200 rows of 6 features and targets for each task: binary, 3 classes, a real value."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(ROWS, FEATURES))
    targets = {
        "binary": (features[:, 0] + features[:, 1] > 0).astype(int),
        "multiclass": np.digitize(features[:, 0] - features[:, 2], [-0.5, 0.5]),
        "regression": features @ np.arange(FEATURES) + rng.normal(scale=0.1, size=ROWS),
    }
    return features, targets


def write_xgboost_models(folder: Path) -> dict[str, Path]:
    """A Booster (binary:logistic, .ubj) and the sklearn API's classifier and regressor (.json)."""
    import xgboost as xgb

    features, targets = training_data()
    paths = {"xgb-binary": folder / "xgb-binary.ubj", "xgb-multi": folder / "xgb-multi.json"}
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(features, label=targets["binary"]),
        num_boost_round=TREES,
    )
    booster.save_model(paths["xgb-binary"])
    xgb.XGBClassifier(n_estimators=TREES, max_depth=3).fit(features, targets["multiclass"]).save_model(
        paths["xgb-multi"]
    )
    paths["xgb-reg"] = folder / "xgb-reg.json"
    xgb.XGBRegressor(n_estimators=TREES, max_depth=3).fit(features, targets["regression"]).save_model(
        paths["xgb-reg"]
    )
    return paths


def write_lightgbm_models(folder: Path) -> dict[str, Path]:
    """Text models (Booster.save_model) for binary, multiclass and regression."""
    import lightgbm as lgb

    features, targets = training_data()
    paths = {}
    for name, objective in (("lgb-binary", "binary"), ("lgb-multi", "multiclass"), ("lgb-reg", "regression")):
        params: dict[str, Any] = {"objective": objective, "num_leaves": 7, "verbose": -1}
        if objective == "multiclass":
            params["num_class"] = 3
        booster = lgb.train(params, lgb.Dataset(features, label=targets[objective]), num_boost_round=TREES)
        paths[name] = folder / f"{name}.txt"
        booster.save_model(paths[name])
    return paths


def write_tied_forest(path: Path) -> Path:
    """A 5-tree RandomForestClassifier (3 random classes, leaves of 2+ rows) saved with skops.

    On the build's 64 fixed-seed verification rows one row's classes tie in exact arithmetic; scikit-learn
    (float64 sums) and the ONNX graph (float32 sums) break the tie differently: label agreement 0.984375,
    every probability within 1e-7.
    """
    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(10)
    features, labels = rng.normal(size=(300, 4)), rng.integers(0, 3, size=300)
    forest = RandomForestClassifier(
        n_estimators=5, random_state=10, min_samples_leaf=2, bootstrap=False, max_features=1
    )
    skops.io.dump(forest.fit(features, labels), path)
    return path
