"""Arrival schedules: constant spacing, Poisson rate, linear ramps, interleaving across processes."""

from __future__ import annotations

import itertools
import random

import pytest

from modelfleet.bench.arrivals import ArrivalSchedule


def _times(schedule: ArrivalSchedule, until_s: float) -> list[float]:
    times = []
    while True:
        due = schedule.next()
        if due >= until_s:
            return times
        times.append(due)


def test_constant_arrivals_are_evenly_spaced() -> None:
    times = _times(ArrivalSchedule(200.0, poisson=False, rng=random.Random(0)), 1.0)
    assert len(times) == 200
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.005}


def test_process_phases_interleave_into_the_total_rate() -> None:
    procs, rate = 4, 400.0
    merged = sorted(
        t
        for proc in range(procs)
        for t in _times(ArrivalSchedule(rate / procs, False, random.Random(0), phase=proc / procs), 1.0)
    )
    assert len(merged) == 400
    gaps = [b - a for a, b in itertools.pairwise(merged)]
    assert max(gaps) == pytest.approx(1 / rate) and min(gaps) == pytest.approx(1 / rate)


def test_poisson_arrivals_have_the_requested_mean_rate() -> None:
    times = _times(ArrivalSchedule(1000.0, poisson=True, rng=random.Random(42)), 20.0)
    assert len(times) == pytest.approx(20_000, rel=0.03)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    variance = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    assert variance**0.5 == pytest.approx(mean, rel=0.05)  # exponential gaps: stddev equals the mean


@pytest.mark.parametrize("poisson", [False, True])
def test_ramp_follows_the_integral_of_the_rate(poisson: bool) -> None:
    # From 0 to 100/s over 10 s, then 100/s: 500 arrivals during the ramp, 100 per second after it.
    schedule = ArrivalSchedule(100.0, poisson, random.Random(3), ramp_s=10.0, from_rate_per_s=0.0)
    times = _times(schedule, 15.0)
    in_ramp = sum(1 for t in times if t < 10.0)
    assert in_ramp == pytest.approx(500, rel=0.1 if poisson else 0.01)
    assert len(times) - in_ramp == pytest.approx(500, rel=0.1 if poisson else 0.01)
    first_second = sum(1 for t in times if t < 1.0)
    last_ramp_second = sum(1 for t in times if 9.0 <= t < 10.0)
    assert first_second < last_ramp_second


def test_ramp_down_between_points() -> None:
    times = _times(ArrivalSchedule(50.0, False, random.Random(0), ramp_s=2.0, from_rate_per_s=150.0), 2.0)
    assert len(times) == pytest.approx(200, abs=1)  # mean of 150 and 50 over 2 s


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ArrivalSchedule(0.0, False, random.Random(0))
