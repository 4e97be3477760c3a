"""Verification figures, thresholds and build options."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from modelfleet.build import BuildOptions
from modelfleet.build.verify import (
    agreement_check,
    check_target_available,
    cosine_check,
    cosine_rows,
    max_abs_diff_check,
    require_passed,
)
from modelfleet.config import parse_spec
from modelfleet.errors import SpecError, Unavailable, VerificationFailed


def test_cosine_rows() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    candidate = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_rows(reference, candidate), [1.0, 0.0, 1.0, 0.0, -1.0])


def test_cosine_check_uses_the_worst_sample() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10, 16))
    candidate = reference.copy()
    candidate[3] += rng.normal(scale=0.3, size=16)  # one sample drifts
    worst = float(cosine_rows(reference[3:4], candidate[3:4])[0])
    check = cosine_check(reference, candidate, threshold=0.999)
    assert check.samples == 10
    assert check.value == pytest.approx(worst)
    assert not check.passed
    assert check.details["mean_cosine_similarity"] > worst
    assert cosine_check(reference, candidate, threshold=worst - 1e-9).passed


def test_cosine_check_counts_nan_as_a_failure() -> None:
    reference = np.ones((2, 4))
    candidate = np.array([[1.0, 1.0, 1.0, 1.0], [np.nan, 1.0, 1.0, 1.0]])
    check = cosine_check(reference, candidate, threshold=0.5)
    assert not check.passed
    assert check.value == -1.0


def test_agreement_check_counts_mismatches() -> None:
    check = agreement_check(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
    assert (check.value, check.passed, check.details["mismatches"]) == (0.75, False, 1.0)
    assert agreement_check(np.array(["a", "b"]), np.array(["a", "b"])).passed


def test_max_abs_diff_check() -> None:
    reference = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert max_abs_diff_check(reference, reference + 5e-5, 1e-4, "max_abs_probability_diff").passed
    failed = max_abs_diff_check(reference, reference + 2e-4, 1e-4, "max_abs_probability_diff")
    assert not failed.passed
    assert failed.value == pytest.approx(2e-4)
    with_nan = max_abs_diff_check(reference, np.full((2, 2), np.nan), 1e-4, "m")
    assert with_nan.value == float("inf") and not with_nan.passed


def test_shape_mismatch_is_a_verification_failure() -> None:
    with pytest.raises(VerificationFailed, match="shapes differ"):
        cosine_check(np.ones((2, 3)), np.ones((2, 4)), 0.9)


def test_require_passed_names_every_failed_check() -> None:
    good = agreement_check(np.array([1]), np.array([1]))
    bad = max_abs_diff_check(np.zeros(3), np.ones(3), 1e-4, "max_abs_probability_diff")
    require_passed([good])
    with pytest.raises(
        VerificationFailed, match=r"max_abs_probability_diff 1 \(threshold 0.0001\) over 3 samples"
    ):
        require_passed([good, bad])


def test_default_thresholds_depend_on_precision() -> None:
    assert BuildOptions().cosine_threshold() == 0.999
    assert BuildOptions(precision="int8").cosine_threshold() == 0.98
    assert BuildOptions(precision="int8", min_cosine=0.99).cosine_threshold() == 0.99


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"precision": "fp16"}, "precision"),
        ({"optimization": "max"}, "optimization"),
        ({"target": "tpu"}, "target"),
        ({"min_cosine": 1.01}, "min_cosine"),
        ({"version": "v1"}, "version"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_are_spec_errors_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        parse_spec(data, BuildOptions, "build options")


def test_every_option_is_documented() -> None:
    assert all((f.description or "").strip() for f in BuildOptions.model_fields.values())


@pytest.mark.parametrize(
    ("target", "provider", "message"),
    [
        (
            "cuda",
            "CUDAExecutionProvider",
            "CUDA execution provider is not available on this machine (install onnxruntime-gpu)",
        ),
        (
            "tensorrt",
            "TensorrtExecutionProvider",
            "TensorRT execution provider is not available on this machine",
        ),
    ],
)
def test_gpu_target_without_provider_gives_one_clear_line(target: str, provider: str, message: str) -> None:
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here")
    with pytest.raises(Unavailable) as caught:
        check_target_available(target)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_cpu_target_is_always_available() -> None:
    check_target_available("cpu")
