"""Loading scikit-learn sources safely: skops trusted types, pickle only when trusted, sample rows."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from modelfleet.build import BuildOptions
from modelfleet.build.sklearn import load_estimator, load_rows, sample_rows
from modelfleet.errors import InvalidInput


@pytest.fixture(scope="module")
def iris_model() -> Any:
    features, labels = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, labels)


def test_standard_skops_file_loads(tmp_path: Path, iris_model: Any) -> None:
    path = tmp_path / "iris.skops"
    skops.io.dump(iris_model, path)
    loaded = load_estimator(path, "skops", BuildOptions())
    features, _ = load_iris(return_X_y=True)
    np.testing.assert_array_equal(loaded.estimator.predict(features), iris_model.predict(features))


def test_skops_file_with_non_sklearn_types_is_refused_until_trusted(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    # operator.neg is harmless, but skops cannot know that: any importable callable could be named.
    model = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=1000)).fit(
        features, labels
    )
    path = tmp_path / "neg.skops"
    skops.io.dump(model, path)
    with pytest.raises(InvalidInput, match=r"not standard scikit-learn: _operator\.neg.*--trust TYPE"):
        load_estimator(path, "skops", BuildOptions())
    loaded = load_estimator(path, "skops", BuildOptions(trusted_types=["_operator.neg"]))
    assert "_operator.neg" in loaded.trusted_types
    assert load_estimator(path, "skops", BuildOptions(trust_pickle=True)).estimator is not None


def test_pickle_is_refused_without_trust_and_loaded_with_it(tmp_path: Path, iris_model: Any) -> None:
    path = tmp_path / "iris.joblib"
    joblib.dump(iris_model, path)
    with pytest.raises(InvalidInput, match=r"runs any code.*--trust-pickle"):
        load_estimator(path, "pickle", BuildOptions())
    loaded = load_estimator(path, "pickle", BuildOptions(trust_pickle=True))
    assert type(loaded.estimator).__name__ == "Pipeline"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", bytes(range(256)) * 8])
def test_corrupt_skops_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.skops"
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match="is not a valid skops file"):
        load_estimator(path, "skops", BuildOptions())


def test_corrupt_pickle_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(InvalidInput, match="not a readable pickle/joblib file"):
        load_estimator(path, "pickle", BuildOptions(trust_pickle=True))


def test_unfitted_and_non_estimators_are_refused(tmp_path: Path) -> None:
    unfitted = tmp_path / "unfitted.skops"
    skops.io.dump(LogisticRegression(), unfitted)
    with pytest.raises(InvalidInput, match="unfitted LogisticRegression"):
        load_estimator(unfitted, "skops", BuildOptions())
    not_a_model = tmp_path / "list.joblib"
    joblib.dump([1, 2, 3], not_a_model)
    with pytest.raises(InvalidInput, match="holds a list, not a scikit-learn estimator"):
        load_estimator(not_a_model, "pickle", BuildOptions(trust_pickle=True))


def test_sample_rows_follow_the_scaler_statistics_and_are_fixed(iris_model: Any) -> None:
    rows = sample_rows(iris_model, 2000, seed=1)
    assert rows.dtype == np.float32 and rows.shape == (2000, 4)
    scaler = iris_model.steps[0][1]
    np.testing.assert_allclose(rows.mean(axis=0), scaler.mean_, atol=0.1)
    np.testing.assert_allclose(rows.std(axis=0), scaler.scale_, rtol=0.1)
    np.testing.assert_array_equal(rows, sample_rows(iris_model, 2000, seed=1))


def test_rows_from_csv_with_header_and_npy(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    rows = load_rows(csv, 4)
    np.testing.assert_allclose(rows, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], rtol=1e-6)
    npy = tmp_path / "rows.npy"
    np.save(npy, np.ones((3, 4)))
    assert load_rows(npy, 4).shape == (3, 4)
    with pytest.raises(InvalidInput, match="rows of 5 numbers"):
        load_rows(npy, 5)
