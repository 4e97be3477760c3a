"""The tabular checks' tolerance arithmetic and the messages that name the flags (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.build import BuildOptions
from modelfleet.build.boosted_trees import range_rows
from modelfleet.build.tabular import excused_rows, label_agreement_check, tolerance_hint, tolerant_diff_check


@pytest.mark.parametrize(
    ("rows", "agreement", "excused"),
    [(64, 1.0, 0), (64, 0.984, 1), (64, 0.98, 1), (100, 0.98, 2), (64, 0.96875, 2)],
)
def test_excused_rows_round_down(rows: int, agreement: float, excused: int) -> None:
    assert excused_rows(rows, agreement) == excused


def test_label_agreement_is_a_fraction_checked_against_the_threshold() -> None:
    expected, got = np.arange(64) % 3, np.arange(64) % 3
    got[5] = 0 if got[5] else 1
    strict = label_agreement_check(expected, got, 1.0)
    assert (strict.value, strict.passed, strict.details["mismatches"]) == (63 / 64, False, 1.0)
    assert label_agreement_check(expected, got, 0.98).passed


def test_a_flipped_row_is_excused_only_within_the_agreement() -> None:
    reference = np.full((64, 2), 0.5)
    candidate = reference + 1e-7
    candidate[9] = [0.3, 0.7]  # one row went down another branch: a whole leaf's difference
    strict = tolerant_diff_check(reference, candidate, 1e-4, "max_abs_probability_diff", 1.0)
    assert not strict.passed and strict.value == pytest.approx(0.2)
    tolerant = tolerant_diff_check(reference, candidate, 1e-4, "max_abs_probability_diff", 0.98)
    assert tolerant.passed and tolerant.value == pytest.approx(1e-7)
    assert tolerant.details == {
        "max_abs_diff_all_rows": pytest.approx(0.2),
        "rows_within_threshold": 63.0,
        "excused_rows": 1.0,
    }


def test_hints_name_the_flag_that_accepts_what_was_measured() -> None:
    options = BuildOptions()
    expected = np.zeros(64, dtype=np.int64)
    got = expected.copy()
    got[:2] = 1
    reference = np.full((64, 2), 0.5)
    few_off, many_off = reference.copy(), reference + 1e-3
    few_off[:2] = [0.1, 0.9]
    labels = label_agreement_check(expected, got, 1.0)
    hint = tolerance_hint([labels], options)
    assert "2 of 64 rows got another label" in hint and "--min-label-agreement 0.968 (now 1)" in hint
    few = tolerant_diff_check(reference, few_off, 1e-4, "max_abs_probability_diff", 1.0)
    assert "to excuse them, pass --min-label-agreement 0.968" in tolerance_hint([few], options)
    many = tolerant_diff_check(reference, many_off, 1e-4, "max_abs_probability_diff", 1.0)
    assert "raise --max-probability-diff" in tolerance_hint([many], options)
    passed = tolerant_diff_check(reference, reference, 1e-4, "max_abs_probability_diff", 1.0)
    assert tolerance_hint([passed], options) == ""


def test_range_rows_cover_each_range_with_a_margin_and_are_fixed() -> None:
    rows = range_rows([(0.0, 4.0), (10.0, 10.0), (-1.0, 1.0)], 2000, seed=3)
    assert rows.dtype == np.float32 and rows.shape == (2000, 3)
    assert rows[:, 0].min() == pytest.approx(-1.0, abs=0.05) and rows[:, 0].max() == pytest.approx(
        5.0, abs=0.05
    )
    assert 7.4 < rows[:, 1].min() < 8.0 and 12.0 < rows[:, 1].max() < 12.6  # one threshold: ± a quarter of it
    np.testing.assert_array_equal(rows, range_rows([(0.0, 4.0), (10.0, 10.0), (-1.0, 1.0)], 2000, seed=3))
