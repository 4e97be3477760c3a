"""Latency statistics on HDR histograms (the `hdrhistogram` package), exact merges and stability checks.

Every latency is recorded in whole microseconds into a histogram that covers 1 µs to 1 hour with 3
significant figures, so a percentile is never off by more than 0.1 % and memory does not grow with the
number of requests. Histograms travel between processes and files in HdrHistogram's standard
compressed, base64 encoding, which any HdrHistogram tool can read; adding two decoded histograms is exact.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from modelfleet.errors import InvalidInput

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: longer than any timeout a run allows
SIGNIFICANT_FIGURES = 3

# The percentiles every summary reports, as (label, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)
# A percentile p is trustworthy only with enough samples above it; p99 needs 1,000 samples (10 above it).
MIN_SAMPLES_FOR = {"p50": 10, "p90": 100, "p95": 200, "p99": 1_000, "p99.9": 10_000}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record_s(histogram: HdrHistogram, seconds: float) -> None:
    """Record one latency given in seconds; values beyond the range are clamped, never dropped."""
    micros = int(seconds * 1_000_000.0 + 0.5)
    if micros < LOWEST_US:
        micros = LOWEST_US
    elif micros > HIGHEST_US:
        micros = HIGHEST_US
    histogram.record_value(micros)


def record_many_us(histogram: HdrHistogram, values_us: np.ndarray[Any, Any]) -> None:
    """Record many microsecond values at once: the same counts ``record_value`` would give, via numpy.

    The generator appends each latency to a flat buffer (tens of nanoseconds) and records the buffer
    here when a window closes or the buffer fills, instead of paying hdrh's pure-Python
    ``record_value`` (about a microsecond) twice per response on the event loop.
    """
    if len(values_us) == 0:
        return
    values = np.clip(np.asarray(values_us, dtype=np.int64), LOWEST_US, HIGHEST_US)
    # hdrh: bucket = bit_length(value | sub_bucket_mask) - unit_magnitude - (half_count_magnitude + 1);
    # frexp's exponent is the bit length, exact for integers below 2**53.
    _, bit_length = np.frexp((values | histogram.sub_bucket_mask).astype(np.float64))
    bucket = (
        bit_length.astype(np.int64)
        - histogram.unit_magnitude
        - (histogram.sub_bucket_half_count_magnitude + 1)
    )
    sub_bucket = values >> (bucket + histogram.unit_magnitude)
    index = ((bucket + 1) << histogram.sub_bucket_half_count_magnitude) + (
        sub_bucket - histogram.sub_bucket_half_count
    )
    # Count over the span the values touch only: a full-length bincount would allocate and add all
    # 23,552 counters on every call.
    lowest_index = int(index.min())
    binned = np.bincount(index - lowest_index).astype(np.uint64)
    touched = _counts(histogram)[lowest_index : lowest_index + len(binned)]
    touched += binned
    histogram.total_count += len(values)
    histogram.min_value = min(histogram.min_value, int(values.min()))
    histogram.max_value = max(histogram.max_value, int(values.max()))


def encode(histogram: HdrHistogram) -> str:
    return bytes(histogram.encode()).decode("ascii")


def decode(text: str) -> HdrHistogram:
    try:
        histogram = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # the codec raises several unrelated types for a corrupt blob
        raise InvalidInput(f"a histogram in the results is corrupt ({type(exc).__name__}: {exc})") from None
    if histogram.lowest_trackable_value != LOWEST_US or histogram.significant_figures != SIGNIFICANT_FIGURES:
        raise InvalidInput("a histogram in the results was recorded with a different range or precision")
    return histogram


def add_into(target: HdrHistogram, other: HdrHistogram) -> HdrHistogram:
    """Add ``other`` into ``target`` exactly, in place, and return ``target``."""
    if other.get_total_count() == 0:
        return target
    if target.counts_len != other.counts_len or target.unit_magnitude != other.unit_magnitude:
        target.add(other)  # a different layout: let the library re-bucket value by value
        return target
    # Same layout: add the counters with numpy. (The library's own add also reports a minimum of 0
    # after adding into an empty histogram; the minimum is kept right here.)
    counts = _counts(target)
    np.add(counts, _counts(other), out=counts)
    target.total_count += other.total_count
    target.min_value = min(target.min_value, other.min_value)
    target.max_value = max(target.max_value, other.max_value)
    return target


def reset(histogram: HdrHistogram) -> None:
    """Empty ``histogram`` for reuse, without touching memory the way a new one would."""
    _counts(histogram).fill(0)
    histogram.total_count = 0
    histogram.min_value = sys.maxsize
    histogram.max_value = 0


def merge_encoded(encoded: Iterable[str]) -> HdrHistogram:
    merged = new_histogram()
    for text in encoded:
        merged = add_into(merged, decode(text))
    return merged


def merge_encoded_to_text(encoded: Iterable[str]) -> str:
    return encode(merge_encoded(encoded))


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles in milliseconds of one histogram, with warnings about thin samples."""

    count: int
    min_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    percentiles_ms: dict[str, float | None]
    thin_percentiles: tuple[str, ...]

    def get(self, label: str) -> float | None:
        if label == "max":
            return self.max_ms
        if label == "min":
            return self.min_ms
        if label == "mean":
            return self.mean_ms
        return self.percentiles_ms.get(label)


# The library answers percentiles, means and counts by walking up to 23,552 counters in Python
# (milliseconds per call, half a second for a mean); a generator doing that for a window's p99 would
# stall its own event loop and send late. These tables give the same answers with numpy.
@lru_cache(maxsize=1)
def _index_tables() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per counter index: the highest and the median value its bucket stands for (as hdrh defines them)."""
    histogram = new_histogram()
    lowest = [histogram.get_value_from_index(i) for i in range(histogram.counts_len)]
    highest = np.array([histogram.get_highest_equivalent_value(v) for v in lowest], dtype=np.float64)
    median = np.array([histogram._hdr_median_equiv_value(v) for v in lowest], dtype=np.float64)
    return highest, median


def _counts(histogram: HdrHistogram) -> np.ndarray[Any, Any]:
    return np.frombuffer(histogram.counts, dtype=np.uint64, count=histogram.counts_len)


def values_at_percentiles_us(histogram: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """Same answers as ``HdrHistogram.get_value_at_percentile`` (for percentiles above 0)."""
    highest, _ = _index_tables()  # built on first use, even for an empty histogram (callers warm it up)
    total = int(histogram.get_total_count())
    if total == 0:
        return [0 for _ in percentiles]
    cumulative = np.cumsum(_counts(histogram))
    values = []
    for percentile in percentiles:
        target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
        index = min(int(np.searchsorted(cumulative, target, side="left")), histogram.counts_len - 1)
        values.append(int(highest[index]))
    return values


def mean_us(histogram: HdrHistogram) -> float:
    """Same answer as ``HdrHistogram.get_mean_value``."""
    total = int(histogram.get_total_count())
    if total == 0:
        return 0.0
    _, median = _index_tables()
    # A plain multiply-and-sum, not np.dot: a dot product this long goes to OpenBLAS, whose worker
    # threads then spin for a while and take CPU from the generator and the target on a small machine.
    return float((_counts(histogram) * median).sum() / total)


def summarize(histogram: HdrHistogram) -> LatencySummary:
    count = int(histogram.get_total_count())
    if count == 0:
        return LatencySummary(0, None, None, None, {label: None for label, _ in PERCENTILES}, ())
    values = values_at_percentiles_us(histogram, [p for _, p in PERCENTILES])
    percentiles: dict[str, float | None] = {
        label: value / 1000.0 for (label, _), value in zip(PERCENTILES, values, strict=True)
    }
    thin = tuple(label for label, _ in PERCENTILES if count < MIN_SAMPLES_FOR[label])
    return LatencySummary(
        count=count,
        min_ms=histogram.get_min_value() / 1000.0,
        mean_ms=round(mean_us(histogram) / 1000.0, 4),
        max_ms=histogram.get_max_value() / 1000.0,
        percentiles_ms=percentiles,
        thin_percentiles=thin,
    )


def count_at_or_below_s(histogram: HdrHistogram, limit_s: float) -> int:
    """How many recorded values are at most ``limit_s``; used for goodput.

    A value counts only when the top of its HDR bucket is within the limit, the same rounding the
    percentiles use, so goodput never credits a response the percentiles would call too slow.
    """
    if histogram.get_total_count() == 0:
        return 0
    highest, _ = _index_tables()
    return int(_counts(histogram)[highest <= limit_s * 1_000_000.0].sum())


@dataclass(frozen=True, slots=True)
class Stability:
    stable: bool | None  # None: fewer windows than the rule needs
    note: str


def check_stability(
    throughputs_per_s: Sequence[float], p99s_ms: Sequence[float | None], windows: int, tolerance: float
) -> Stability:
    """Stable when the last ``windows`` windows agree within ``tolerance`` on throughput and p99.

    Agreement is (max - min) / mean over those windows, for each figure separately.
    """
    if len(throughputs_per_s) < windows:
        return Stability(None, f"only {len(throughputs_per_s)} full window(s); stability needs {windows}")
    last_rates = list(throughputs_per_s[-windows:])
    last_p99 = [value for value in p99s_ms[-windows:] if value is not None]
    rate_spread = _spread(last_rates)
    if len(last_p99) < windows:
        return Stability(
            False, f"a recent window had no successful responses (throughput spread {rate_spread:.0%})"
        )
    p99_spread = _spread(last_p99)
    stable = rate_spread <= tolerance and p99_spread <= tolerance
    word = "stable" if stable else "unstable"
    return Stability(
        stable,
        f"{word}: last {windows} windows differ by {rate_spread:.1%} in throughput and {p99_spread:.1%} in p99 "
        f"(limit {tolerance:.0%})",
    )


def _spread(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0 if max(values) == min(values) else float("inf")
    return (max(values) - min(values)) / mean
