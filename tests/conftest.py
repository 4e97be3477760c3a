"""Artifacts built once per test session with `modelfleet build`, shared by every test that needs a model.

Only these three fixtures live here (the build area owns this file); each returns the artifact folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact


@pytest.fixture(scope="session")
def minilm_fp32_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 as an fp32 text-embedding artifact."""
    output = tmp_path_factory.mktemp("artifacts") / "minilm-fp32"
    build_artifact(BUNDLED_SOURCE, output, BuildOptions(precision="fp32"))
    return output


@pytest.fixture(scope="session")
def minilm_int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 as an int8 (dynamically quantized) text-embedding artifact."""
    output = tmp_path_factory.mktemp("artifacts") / "minilm-int8"
    build_artifact(BUNDLED_SOURCE, output, BuildOptions(precision="int8"))
    return output


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scaled logistic regression trained on iris, saved with skops and built as artifact `iris`."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folder = tmp_path_factory.mktemp("artifacts")
    features, labels = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)).fit(
        features, labels
    )
    source = folder / "iris.skops"
    skops.io.dump(model, source)
    output = folder / "iris"
    build_artifact(source, output, BuildOptions(name="iris"))
    return output
