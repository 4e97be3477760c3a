"""Fixtures every test may use, and the loopback guard.

Artifacts are built once per test session with `modelfleet build`; each fixture returns the artifact
folder. Helpers that are imported rather than injected live in tests/support/, one module per thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfleet.build import BUNDLED_SOURCE, BuildOptions, build_artifact
from tests.support import loopback_guard

loopback_guard.install()


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fail a test that connected anywhere but loopback (tests/support/loopback_guard.py)."""
    yield  # a connection made while a module's fixtures were set up fails the first test using them
    violations = loopback_guard.take_violations()
    if violations:
        pytest.fail("; ".join(violations), pytrace=False)


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


@pytest.fixture(scope="session")
def torch_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/support/torch_mlp's model as a TorchScript file `mlp.pt` and a plain torch.save pickle
    `pickled.pt`, with example inputs `examples.npz` (12 rows of `features` and `extra`)."""
    from tests.support import torch_mlp

    folder = tmp_path_factory.mktemp("torch")
    torch_mlp.write_torchscript(folder / "mlp.pt")
    torch_mlp.write_torch_save(folder / "pickled.pt")
    torch_mlp.write_examples(folder / "examples.npz")
    return folder


@pytest.fixture(scope="session")
def sentiment_head_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForSequenceClassification (negative/positive) built as artifact `sentiment`."""
    from tests.support.hf_heads import SENTIMENT_LABELS, tiny_head_folder

    folder = tmp_path_factory.mktemp("artifacts")
    source = tiny_head_folder(folder / "sentiment-source", "BertForSequenceClassification", SENTIMENT_LABELS)
    output = folder / "sentiment"
    build_artifact(source, output, BuildOptions(name="sentiment"))
    return output


@pytest.fixture(scope="session")
def ner_head_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForTokenClassification (O, B-PER, I-PER, B-LOC, I-LOC) built as artifact `ner`."""
    from tests.support.hf_heads import NER_LABELS, tiny_head_folder

    folder = tmp_path_factory.mktemp("artifacts")
    source = tiny_head_folder(folder / "ner-source", "BertForTokenClassification", NER_LABELS)
    output = folder / "ner"
    build_artifact(source, output, BuildOptions(name="ner"))
    return output
