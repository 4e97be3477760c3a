"""Judging windows: the test each feature gets, the correction across features, and windows too small to judge."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.detect import assess, assessment_from_json, assessment_json
from modelfleet.drift.sampling import Window

CENTRES = np.array([5.8, 3.0, 3.7, 1.2])
SPREADS = np.array([0.8, 0.4, 1.7, 0.7])


def _tabular(rng: np.random.Generator, items: int, shift: float = 0.0) -> Window:
    features = rng.normal(CENTRES, SPREADS, size=(items, 4)).astype(np.float32)
    features[:, 2] += shift * SPREADS[2]
    labels = (features[:, 2] > 4.5).astype(np.int64) + (features[:, 2] > 6.0)
    return Window({"input": features}, {"label": labels}, np.zeros(items))


def test_same_distribution_is_not_drift_and_a_shift_names_its_feature() -> None:
    rng = np.random.default_rng(3)
    config = DriftConfig()
    reference = _tabular(rng, 800)
    same = assess("iris", 1, reference, _tabular(rng, 300), config)
    assert same.judged and not same.drifted and same.reason == "no drift in 5 test(s)"
    shifted = assess("iris", 1, reference, _tabular(rng, 300, shift=1.0), config)
    assert shifted.judged and shifted.drifted
    drifted = {f.name: f.test for f in shifted.findings if f.drifted}
    assert drifted == {"input:input[2]": "ks", "output:label": "chi2"}
    assert "input:input[2]" in shifted.reason
    psi = shifted.details["features"]["input:input[2]"]["psi"]
    assert psi > shifted.details["features"]["input:input[0]"]["psi"]


def test_holm_levels_are_reported_per_rank() -> None:
    rng = np.random.default_rng(4)
    result = assess("iris", 1, _tabular(rng, 500), _tabular(rng, 300, shift=1.0), DriftConfig(alpha=0.05))
    levels = sorted(f.threshold for f in result.findings)
    assert levels == pytest.approx([0.05 / k for k in (5, 4, 3, 2, 1)])


def test_large_reference_uses_distances_against_thresholds() -> None:
    rng = np.random.default_rng(5)
    config = DriftConfig(large_reference_items=1000)
    result = assess("iris", 1, _tabular(rng, 1000), _tabular(rng, 300, shift=0.5), config)
    tests = {f.name: f.test for f in result.findings}
    assert tests["input:input[0]"] == "wasserstein" and tests["output:label"] == "jensen_shannon"
    flagged = next(f for f in result.findings if f.name == "input:input[2]")
    assert flagged.p_value is None and flagged.threshold == config.wasserstein_threshold and flagged.drifted


@pytest.mark.parametrize(
    ("reference_items", "window_items", "reason"),
    [
        (50, 300, "reference of 50 items is below min_reference_items 100"),
        (300, 99, "window of 99 items is below min_window_items 100"),
    ],
)
def test_too_small_to_judge_says_so(reference_items: int, window_items: int, reason: str) -> None:
    rng = np.random.default_rng(6)
    result = assess(
        "iris", 1, _tabular(rng, reference_items), _tabular(rng, window_items, 3.0), DriftConfig()
    )
    assert not result.judged and not result.drifted and result.reason == reason and not result.findings


def test_embeddings_get_mmd_and_probabilities_their_argmax() -> None:
    rng = np.random.default_rng(8)

    def window(items: int, shift: float) -> Window:
        embedding = rng.normal(shift, 1.0, size=(items, 64))
        logits = rng.normal(size=(items, 3)) + np.array([shift * 3, 0.0, 0.0])
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return Window({}, {"embedding": embedding, "probabilities": probabilities}, np.zeros(items))

    config = DriftConfig(mmd_permutations=99, mmd_max_items=150)
    same = assess("m", 2, window(200, 0.0), window(200, 0.0), config)
    assert {(f.name, f.test) for f in same.findings} == {
        ("output:embedding", "mmd"),
        ("output:probabilities:argmax", "chi2"),
    }
    assert not same.drifted
    shifted = assess("m", 2, window(200, 0.0), window(200, 0.5), config)
    assert {f.name for f in shifted.findings if f.drifted} == {
        "output:embedding",
        "output:probabilities:argmax",
    }


def test_text_inputs_count_only_when_categorical() -> None:
    many = np.array([f"text {i}" for i in range(200)], dtype=object)
    few = np.array(["yes", "no"] * 100, dtype=object)
    result = assess(
        "t",
        None,
        Window({"a": many, "b": few}, {}, np.zeros(200)),
        Window({"a": many, "b": few}, {}, np.zeros(200)),
        DriftConfig(),
    )
    assert [(f.name, f.test) for f in result.findings] == [("input:b", "chi2")]


def test_assessment_json_round_trips() -> None:
    rng = np.random.default_rng(9)
    result = assess("iris", 1, _tabular(rng, 300), _tabular(rng, 200, 1.0), DriftConfig())
    assert assessment_from_json(assessment_json(result)) == result
