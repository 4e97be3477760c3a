"""Fixtures every test may use, and the loopback guard.

Artifacts are built once per test session with `modelfleet build`; each fixture returns the artifact
folder. Helpers that are imported rather than injected live in tests/support/, one module per thing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
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


def shared_artifact(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """`build(folder)` once per test run, however many pytest-xdist workers ask for it.

    Under xdist every worker has its own session, so a session fixture would build its artifact once per
    worker (MiniLM takes 5-12 s of a 2-core machine each time). The workers' base temp folders share a parent:
    the first to take the lock builds there, the others wait and reuse the folder. Without xdist it is a
    plain build into the session's temp folder.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-gw") else base
    output = root / f"shared-{name}" / name  # a folder each: a build's temp files are seen by no other test
    output.parent.mkdir(parents=True, exist_ok=True)
    with (root / f"shared-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"shared-{name}.done"
        if not done.exists():
            build(output)
            done.touch()
    return output


@pytest.fixture(scope="session")
def minilm_fp32_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 as an fp32 text-embedding artifact."""
    return shared_artifact(
        tmp_path_factory,
        "minilm-fp32",
        lambda out: build_artifact(BUNDLED_SOURCE, out, BuildOptions(precision="fp32")),
    )


@pytest.fixture(scope="session")
def minilm_int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 as an int8 (dynamically quantized) text-embedding artifact."""
    return shared_artifact(
        tmp_path_factory,
        "minilm-int8",
        lambda out: build_artifact(BUNDLED_SOURCE, out, BuildOptions(precision="int8")),
    )


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scaled logistic regression trained on iris, saved with skops and built as artifact `iris`."""

    def build(output: Path) -> None:
        import skops.io
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        features, labels = load_iris(return_X_y=True)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)).fit(
            features, labels
        )
        source = output.parent / "iris.skops"
        skops.io.dump(model, source)
        build_artifact(source, output, BuildOptions(name="iris"))

    return shared_artifact(tmp_path_factory, "iris", build)


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


def _tiny_head_artifact(tmp_path_factory: pytest.TempPathFactory, name: str, architecture: str) -> Path:
    from tests.support.hf_heads import NER_LABELS, SENTIMENT_LABELS, tiny_head_folder

    labels = SENTIMENT_LABELS if name == "sentiment" else NER_LABELS

    def build(output: Path) -> None:
        source = tiny_head_folder(output.parent / f"{name}-source", architecture, labels)
        build_artifact(source, output, BuildOptions(name=name))

    return shared_artifact(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def sentiment_head_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForSequenceClassification (negative/positive) built as artifact `sentiment`."""
    return _tiny_head_artifact(tmp_path_factory, "sentiment", "BertForSequenceClassification")


@pytest.fixture(scope="session")
def ner_head_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForTokenClassification (O, B-PER, I-PER, B-LOC, I-LOC) built as artifact `ner`."""
    return _tiny_head_artifact(tmp_path_factory, "ner", "BertForTokenClassification")
