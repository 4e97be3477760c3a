"""The capacity search as a pure policy: doubling, bisection, invalid probes, repeats, with no servers."""

from __future__ import annotations

import pytest

from modelfleet.tune.capacity import (
    CapacityPolicy,
    CapacityResult,
    Probe,
    RepeatedCapacity,
    closest_probe,
    repeat_capacity,
    search_capacity,
)

POLICY = CapacityPolicy(
    start_rate_per_s=50, min_rate_per_s=5, max_rate_per_s=20_000, resolution=0.1, max_probes=20
)


def _server(capacity: float, generator_limit: float = 1e9):
    """A measure() of a server that meets the SLO up to `capacity`/s and a generator good up to its limit."""
    asked: list[float] = []

    def measure(rate: float) -> Probe:
        asked.append(rate)
        valid = rate <= generator_limit
        passed = valid and rate <= capacity
        latency = 10.0 if rate <= capacity else 500.0
        return Probe(
            rate_per_s=rate,
            passed=passed,
            valid=valid,
            goodput_per_s=min(rate, capacity),
            throughput_per_s=min(rate, capacity),
            p50_ms=latency / 2,
            p99_ms=latency,
            error_rate=0.0,
            late_fraction=0.0 if valid else 0.2,
            reason="" if passed else "p99 over",
            latency_ms=latency,
        )

    return measure, asked


def test_doubles_then_bisects_to_the_resolution() -> None:
    measure, asked = _server(capacity=700)
    result = search_capacity(measure, POLICY)
    assert asked[:5] == [50, 100, 200, 400, 800]  # doubling stops at the first failure
    assert asked[5] == 600  # then the midpoint of 400 and 800
    assert 0.9 * 700 <= result.capacity_per_s <= 700
    failing = min(
        p.rate_per_s for p in result.probes if not p.passed and p.rate_per_s > result.capacity_per_s
    )
    assert (failing - result.capacity_per_s) / failing <= POLICY.resolution
    assert not result.at_max and not result.generator_bound and result.best is not None


def test_a_failing_start_halves_down_and_gives_zero_below_the_minimum() -> None:
    measure, asked = _server(capacity=30)
    result = search_capacity(measure, POLICY)
    assert asked[:2] == [50, 25] and 27 <= result.capacity_per_s <= 30
    measure, asked = _server(capacity=1)
    nothing = search_capacity(measure, POLICY)
    assert nothing.capacity_per_s == 0 and nothing.best is None
    assert asked == [50, 25, 12.5, 6.25]  # the next halving (3.1) is below min_rate_per_s


def test_passing_at_the_maximum_rate_is_marked_at_least() -> None:
    measure, asked = _server(capacity=1e9)
    policy = CapacityPolicy(50, 5, 300, 0.1, 20)
    result = search_capacity(measure, policy)
    assert asked == [50, 100, 200, 300] and result.capacity_per_s == 300 and result.at_max


def test_invalid_probes_never_count_and_say_the_generator_bounded_the_search() -> None:
    measure, _ = _server(capacity=10_000, generator_limit=900)
    result = search_capacity(measure, POLICY)
    assert result.capacity_per_s <= 900 and result.generator_bound
    assert all(p.valid for p in result.probes if p.passed)


def test_the_probe_budget_is_a_hard_limit() -> None:
    measure, asked = _server(capacity=777)
    result = search_capacity(measure, CapacityPolicy(50, 5, 20_000, 0.001, 7))
    assert len(asked) == 7 == len(result.probes)
    assert result.capacity_per_s <= 777


def test_repeats_give_a_spread_and_size_by_the_lowest() -> None:
    measure, _ = _server(capacity=700)
    many = repeat_capacity(measure, POLICY, repeats=3)
    assert len(many.runs) == 3 and len(set(many.capacities_per_s)) == 1
    # Later repeats start at half the first capacity: fewer probes than a fresh search from 50/s.
    assert len(many.runs[1].probes) < len(many.runs[0].probes)

    def run_at(capacity: float) -> CapacityResult:
        probe = Probe(capacity, True, True, capacity, capacity, 1.0, 2.0, 0.0, 0.0)
        return CapacityResult(capacity, probe, (probe,), False, False)

    spread = RepeatedCapacity((run_at(700.0), run_at(520.0), run_at(610.0)))
    assert spread.capacity_per_s == 520.0 and spread.median_per_s == 610.0
    assert spread.spread_per_s == (520.0, 700.0)
    assert spread.best is not None and spread.best.rate_per_s == 520.0


def test_repeats_stop_when_nothing_passed() -> None:
    measure, _ = _server(capacity=1)
    assert len(repeat_capacity(measure, POLICY, repeats=3).runs) == 1


def test_closest_probe_ignores_invalid_ones() -> None:
    def probe(rate: float, latency: float, valid: bool = True) -> Probe:
        return Probe(rate, False, valid, 0.0, 0.0, None, latency, 0.0, 0.0, "over", latency)

    assert closest_probe([probe(50, 40.0), probe(25, 31.0), probe(12, 1.0, valid=False)]).rate_per_s == 25  # type: ignore[union-attr]
    assert closest_probe([]) is None


@pytest.mark.parametrize("capacity", [55.0, 333.0, 4321.0])
def test_capacity_is_always_a_passing_rate_within_resolution(capacity: float) -> None:
    measure, _ = _server(capacity=capacity)
    result = search_capacity(measure, POLICY)
    assert result.best is not None and result.best.passed
    assert capacity * (1 - POLICY.resolution) <= result.capacity_per_s <= capacity
