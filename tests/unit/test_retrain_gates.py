"""Gate decisions from both versions' outputs on the same held-out items (pure), by task."""

from __future__ import annotations

import numpy as np

from modelfleet.config.retrain import RetrainGates
from modelfleet.drift.gates import latency_gate, quality_gates

GATES = RetrainGates()


def _labels(*values: int) -> dict[str, np.ndarray]:
    return {
        "label": np.array(values, dtype=np.int64),
        "probabilities": np.zeros((len(values), 3), np.float32),
    }


def test_classifier_with_labels_gates_on_the_accuracy_delta() -> None:
    current, better, worse = _labels(0, 0, 2, 2), _labels(0, 1, 2, 2), _labels(1, 1, 1, 2)
    truth = [0, 1, 2, 2]
    [passed] = quality_gates("classification", current, better, truth, GATES)
    assert passed.passed and passed.current == 0.75 and passed.candidate == 1.0
    [failed] = quality_gates("classification", current, worse, truth, GATES)
    assert not failed.passed and "delta -0.250 < 0 (gates.min_accuracy_delta)" in failed.detail
    strict = RetrainGates(min_accuracy_delta=0.3)
    assert not quality_gates("classification", current, better, truth, strict)[0].passed


def test_classifier_without_labels_gates_on_agreement_and_text_labels_compare_as_text() -> None:
    current = {"label": np.array([b"pos", b"neg", b"pos", b"pos"], dtype=object)}
    candidate = {"label": np.array([b"pos", b"neg", b"neg", b"neg"], dtype=object)}
    [gate] = quality_gates("text-classification", current, candidate, None, RetrainGates(min_agreement=0.6))
    assert gate.name == "agreement" and gate.candidate == 0.5 and not gate.passed
    [with_truth] = quality_gates(
        "text-classification", current, candidate, ["pos", "neg", "neg", "neg"], GATES
    )
    assert with_truth.passed and with_truth.candidate == 1.0


def test_regressor_gates_on_the_error_ratio_and_embedder_on_cosine() -> None:
    truth = [1.0, 2.0, 3.0]
    current = {"y": np.array([[1.5], [2.5], [3.5]], np.float32)}
    candidate = {"y": np.array([[1.0], [2.0], [3.5]], np.float32)}
    [mse] = quality_gates("regression", current, candidate, truth, GATES)
    assert mse.passed and np.isclose(mse.current, 0.25) and np.isclose(mse.candidate, 0.25 / 3)
    assert not quality_gates("regression", candidate, current, truth, GATES)[0].passed
    assert quality_gates("regression", current, candidate, None, GATES) == []
    a = {"embedding": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)}
    b = {"embedding": np.array([[1.0, 0.1], [0.0, -1.0]], np.float32)}
    [cosine] = quality_gates("text-embedding", a, b, None, GATES)
    assert not cosine.passed and cosine.candidate is not None and abs(cosine.candidate) < 0.01


def test_latency_gate_allows_the_ratio_plus_slack() -> None:
    gates = RetrainGates(max_p99_latency_ratio=2.0, p99_slack_ms=1.0)
    assert latency_gate(0.010, 0.0209, gates).passed
    slow = latency_gate(0.010, 0.0211, gates)
    assert not slow.passed and "> 21.000 ms" in slow.detail
