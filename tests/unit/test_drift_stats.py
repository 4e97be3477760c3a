"""The drift statistics on known distributions: quiet on the same one at a fixed seed, loud on a clear shift."""

from __future__ import annotations

import numpy as np
import pytest
from tests.support.fresh_process import loaded_modules

from modelfleet.drift import stats


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_ks_same_distribution_is_quiet_and_a_shift_is_not(rng: np.random.Generator) -> None:
    reference = rng.normal(size=500)
    _, same_p = stats.ks_test(reference, rng.normal(size=300))
    statistic, shifted_p = stats.ks_test(reference, rng.normal(0.8, 1.0, size=300))
    assert same_p > 0.05
    assert shifted_p < 1e-6 and statistic > 0.2


def test_chi2_on_categories(rng: np.random.Generator) -> None:
    reference = rng.choice(3, size=600, p=[0.5, 0.3, 0.2])
    _, same_p = stats.chi2_test(reference, rng.choice(3, size=300, p=[0.5, 0.3, 0.2]))
    _, shifted_p = stats.chi2_test(reference, rng.choice(3, size=300, p=[0.2, 0.3, 0.5]))
    assert same_p > 0.05 and shifted_p < 1e-6
    assert stats.chi2_test(np.zeros(10), np.zeros(10)) == (0.0, 1.0)  # one category: nothing to test


def test_distances_have_their_known_values(rng: np.random.Generator) -> None:
    assert stats.jensen_shannon(np.array([0, 1, 1]), np.array([0, 1, 1])) == pytest.approx(0.0, abs=1e-9)
    assert stats.jensen_shannon(np.array([0, 0]), np.array([1, 1])) == pytest.approx(1.0)
    reference = rng.normal(0.0, 2.0, size=4000)
    # A shift by one standard deviation is a normalised Wasserstein distance of about 1.
    assert stats.wasserstein_normalised(reference, reference + 2.0) == pytest.approx(1.0, abs=0.02)


def test_psi_is_small_when_stable_and_large_when_shifted(rng: np.random.Generator) -> None:
    reference = rng.normal(size=2000)
    assert stats.psi(reference, rng.normal(size=2000), bins=10) < 0.02
    assert stats.psi(reference, rng.normal(1.0, 1.0, size=2000), bins=10) > 0.5


def test_holm_steps_down_and_benjamini_hochberg_steps_up() -> None:
    p_values = [0.01, 0.04, 0.03, 0.005]
    # Holm: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2 stops.
    assert stats.holm(p_values, 0.05) == [True, False, False, True]
    # BH: the largest p <= rank/k * alpha is 0.04 <= 0.05, so all four are rejected.
    assert stats.benjamini_hochberg(p_values, 0.05) == [True, True, True, True]
    assert stats.holm([], 0.05) == [] and stats.benjamini_hochberg([], 0.05) == []


def test_mmd_permutation_test_on_embeddings(rng: np.random.Generator) -> None:
    reference = rng.normal(size=(150, 48))
    _, same_p = stats.mmd_permutation_test(reference, rng.normal(size=(150, 48)), permutations=99)
    statistic, shifted_p = stats.mmd_permutation_test(
        reference, rng.normal(0.3, 1.0, size=(150, 48)), permutations=99
    )
    assert same_p > 0.05
    assert shifted_p == pytest.approx(1 / 100)  # no permutation reached the observed statistic
    assert statistic > 0


def test_a_server_process_imports_no_scipy_until_a_drift_check_runs() -> None:
    # scipy.stats took half a server's start-up (1.2 s of 2.4 s), paid again on every crash restart.
    imports = "import modelfleet.cli.main, modelfleet.server.app, modelfleet.drift.detect"
    assert loaded_modules(imports).isdisjoint({"scipy", "torch", "transformers", "sklearn"})
    check = "from modelfleet.drift import stats; import numpy as np; stats.ks_test(np.zeros(3), np.ones(3))"
    assert "scipy" in loaded_modules(f"{imports}; {check}")
