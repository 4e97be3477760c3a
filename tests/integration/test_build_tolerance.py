"""The tree-agreement tolerance: a forest whose float32 graph breaks a near-tie differently from scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import skops.io
from tests.support.tree_models import write_tied_forest

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.build.sklearn import sample_rows
from modelfleet.build.tabular import VERIFICATION_ROWS, VERIFICATION_SEED
from modelfleet.errors import VerificationFailed
from modelfleet.manifest import read_manifest


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tied_forest(tmp_path_factory.mktemp("forest") / "forest.skops")


def test_default_threshold_refuses_the_forest_and_names_the_flag(forest: Path, tmp_path: Path) -> None:
    output = tmp_path / "forest"
    with pytest.raises(VerificationFailed) as failure:
        build_artifact(forest, output, BuildOptions())
    message = str(failure.value)
    assert "label_agreement 0.984375 (threshold 1) over 64 samples" in message
    assert "1 of 64 rows got another label than the framework" in message
    assert "pass --min-label-agreement 0.984 (now 1)" in message
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_lowered_threshold_builds_and_records_the_measured_agreement(forest: Path, tmp_path: Path) -> None:
    manifest = build_artifact(forest, tmp_path / "forest", BuildOptions(min_label_agreement=0.98))
    labels, probabilities = manifest.verification
    assert (labels.metric, labels.value, labels.threshold, labels.passed) == (
        "label_agreement",
        0.984375,
        0.98,
        True,
    )
    assert labels.details["mismatches"] == 1.0
    # The tie is broken differently; the probabilities themselves agree, so no row needs excusing there.
    assert probabilities.metric == "max_abs_probability_diff" and probabilities.value < 1e-6
    assert probabilities.details["rows_within_threshold"] == 64.0
    assert read_manifest(tmp_path / "forest").extra["build_options"]["min_label_agreement"] == 0.98
    # The disagreeing row really is a tie of two classes, not a wrong answer.
    model = skops.io.load(forest, trusted=skops.io.get_untrusted_types(file=forest))  # made above
    rows = sample_rows(model, VERIFICATION_ROWS, VERIFICATION_SEED)
    session = ort.InferenceSession(
        str(tmp_path / "forest" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    got_labels, _ = session.run(None, {"input": rows})
    [row] = np.flatnonzero(got_labels != model.predict(rows))
    expected = model.predict_proba(rows[row : row + 1])[0]
    assert abs(expected[got_labels[row]] - expected.max()) < 1e-9


def test_probability_rows_beyond_the_threshold_are_not_excused(forest: Path, tmp_path: Path) -> None:
    with pytest.raises(
        VerificationFailed,
        match=r"max_abs_probability_diff \d\.\d+e-08 \(threshold 1e-09\).*rows differ from the framework by more than 1e-09 .*raise --max-probability-diff",
    ):
        build_artifact(
            forest, tmp_path / "strict", BuildOptions(min_label_agreement=0.98, max_probability_diff=1e-9)
        )
