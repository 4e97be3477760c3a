"""HDR statistics: exact merges, fast percentiles that agree with the library, goodput counts, stability."""

from __future__ import annotations

import random

import pytest

from modelfleet.bench import stats
from modelfleet.errors import InvalidInput


def _histogram(values_us: list[int]) -> stats.HdrHistogram:
    histogram = stats.new_histogram()
    for value in values_us:
        histogram.record_value(value)
    return histogram


def test_merging_encoded_histograms_equals_recording_everything_in_one() -> None:
    rng = random.Random(1)
    parts = [[rng.randint(100, 5_000_000) for _ in range(3_000)] for _ in range(4)]
    merged = stats.merge_encoded(stats.encode(_histogram(part)) for part in parts)
    together = _histogram([v for part in parts for v in part])
    assert merged.get_total_count() == together.get_total_count() == 12_000
    assert merged.get_min_value() == together.get_min_value()
    assert merged.get_max_value() == together.get_max_value()
    for percentile in (50, 90, 99, 99.9):
        assert merged.get_value_at_percentile(percentile) == together.get_value_at_percentile(percentile)


def test_merge_keeps_the_true_minimum_when_one_part_is_empty() -> None:
    # hdrhistogram 0.10 reports min 0 after adding into an empty histogram; add_into works around it.
    merged = stats.merge_encoded(
        [stats.encode(stats.new_histogram()), stats.encode(_histogram([1500, 2500]))]
    )
    assert merged.get_min_value() == _histogram([1500]).get_min_value()
    assert merged.get_total_count() == 2


def test_fast_percentiles_and_mean_agree_with_the_library() -> None:
    rng = random.Random(7)
    histogram = _histogram([int(rng.lognormvariate(9, 1.5)) + 1 for _ in range(20_000)])
    percentiles = [1, 25, 50, 90, 99, 99.9, 100]
    assert stats.values_at_percentiles_us(histogram, percentiles) == [
        histogram.get_value_at_percentile(p) for p in percentiles
    ]
    assert stats.mean_us(histogram) == pytest.approx(histogram.get_mean_value(), rel=1e-12)


def test_summary_in_milliseconds_with_thin_sample_warnings() -> None:
    summary = stats.summarize(_histogram([20_000] * 500))
    assert summary.count == 500
    assert summary.percentiles_ms["p50"] == pytest.approx(20.0, rel=0.001)
    assert summary.thin_percentiles == ("p99", "p99.9")
    assert stats.summarize(stats.new_histogram()).percentiles_ms["p99"] is None


def test_values_are_clamped_to_the_range_not_dropped() -> None:
    histogram = stats.new_histogram()
    stats.record_s(histogram, 0.0)
    stats.record_s(histogram, 10_000.0)  # longer than the 1 hour range
    assert histogram.get_total_count() == 2
    assert histogram.get_max_value() >= stats.HIGHEST_US * 0.999


def test_goodput_counts_only_values_whose_bucket_is_within_the_limit() -> None:
    histogram = _histogram([10_000] * 90 + [150_000] * 10)
    assert stats.count_at_or_below_s(histogram, 0.1) == 90
    assert stats.count_at_or_below_s(histogram, 0.2) == 100
    assert stats.count_at_or_below_s(stats.new_histogram(), 1.0) == 0


def test_corrupt_histogram_is_bad_input() -> None:
    with pytest.raises(InvalidInput):
        stats.decode("not-a-histogram")


@pytest.mark.parametrize(
    ("rates", "p99s", "stable"),
    [
        ([100, 102, 98], [20.0, 21.0, 20.5], True),
        ([100, 130, 98], [20.0, 21.0, 20.5], False),  # throughput disagrees
        ([100, 100, 100], [20.0, 40.0, 20.0], False),  # p99 disagrees
        ([100, 100], [20.0, 20.0], None),  # too few windows
        ([100, 100, 100], [20.0, None, 20.0], False),  # a window without successes
    ],
)
def test_stability_rule(rates: list[float], p99s: list[float | None], stable: bool | None) -> None:
    assert stats.check_stability(rates, p99s, windows=3, tolerance=0.10).stable is stable


def test_stability_looks_only_at_the_last_windows() -> None:
    assert stats.check_stability(
        [10, 500, 100, 101, 99], [1, 90, 20, 20, 20], windows=3, tolerance=0.1
    ).stable


def test_bulk_recording_gives_exactly_the_counts_of_record_value() -> None:
    import numpy as np

    rng = random.Random(5)
    values = [int(rng.lognormvariate(8, 2)) + 1 for _ in range(50_000)]
    values += [1, 1023, 1024, 2047, 2048, 2049, stats.HIGHEST_US, stats.HIGHEST_US * 2]  # bucket edges, clamp
    one_by_one, bulk = stats.new_histogram(), stats.new_histogram()
    for value in values:
        one_by_one.record_value(min(value, stats.HIGHEST_US))
    stats.record_many_us(bulk, np.array(values[:20_000], dtype=np.int64))
    stats.record_many_us(bulk, np.array(values[20_000:], dtype=np.int64))
    assert stats.encode(bulk) == stats.encode(one_by_one)
    assert (bulk.get_min_value(), bulk.get_max_value()) == (
        one_by_one.get_min_value(),
        one_by_one.get_max_value(),
    )


def test_in_place_add_and_reset_match_the_library() -> None:
    rng = random.Random(9)
    first = [rng.randint(30, 900_000) for _ in range(4_000)]
    second = [rng.randint(10, 2_000_000) for _ in range(4_000)]
    target = _histogram(first)
    assert stats.add_into(target, _histogram(second)) is target
    assert stats.encode(target) == stats.encode(_histogram(first + second))
    assert (target.get_min_value(), target.get_max_value()) == (
        _histogram(first + second).get_min_value(),
        _histogram(first + second).get_max_value(),
    )

    stats.reset(target)
    assert target.get_total_count() == 0
    assert stats.encode(target) == stats.encode(stats.new_histogram())
    target.record_value(1234)  # a reset histogram records like a new one
    assert stats.encode(target) == stats.encode(_histogram([1234]))
    assert target.get_min_value() == _histogram([1234]).get_min_value()
