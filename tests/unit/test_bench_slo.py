"""SLO gates: parsing with units, verdicts per point, goodput limit, invalid points fail."""

from __future__ import annotations

import pytest
from tests.support.bench_results import synthetic_point, synthetic_result

from modelfleet.bench.slo import evaluate, goodput_limit_ms, parse_slo
from modelfleet.errors import InvalidInput


def test_parse_gates_with_units() -> None:
    gates = parse_slo(
        "p99<100ms, p50<=0.02s, p99.9<500000us, error_rate<0.1%, throughput>500, goodput>=450/s, max<2"
    )
    assert [(g.metric, g.op, g.threshold) for g in gates] == [
        ("p99", "<", 100.0),
        ("p50", "<=", 20.0),
        ("p99.9", "<", 500.0),
        ("error_rate", "<", 0.001),
        ("throughput", ">", 500.0),
        ("goodput", ">=", 450.0),
        ("max", "<", 2.0),
    ]
    assert parse_slo(None) == []
    assert [g.metric for g in parse_slo(["p99<1ms", "error_rate<0.01"])] == ["p99", "error_rate"]


@pytest.mark.parametrize(
    "text", ["p99<<3", "latency<3ms", "p99<3hours", "error_rate<5/s", "error_rate<200%", "throughput>5ms"]
)
def test_bad_gates_are_bad_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_slo(text)


def test_goodput_limit_comes_from_the_highest_percentile_upper_bound() -> None:
    assert goodput_limit_ms(parse_slo("p50<20ms,p99<100ms,throughput>5")) == 100.0
    assert goodput_limit_ms(parse_slo("p99>100ms,error_rate<1%")) is None


def test_verdicts_per_point_and_goodput() -> None:
    fast = synthetic_point(0, [10.0] * 1000)  # 10 ms every time
    slow = synthetic_point(1, [10.0] * 900 + [300.0] * 100)  # 10 % take 300 ms
    result = synthetic_result([fast, slow], slo="p99<100ms,error_rate<1%")
    assert result.slo is not None and not result.slo.passed
    verdicts = {(v.point, v.gate): v.passed for v in result.slo.verdicts}
    assert verdicts == {
        (0, "p99<100ms"): True,
        (0, "error_rate<1%"): True,
        (1, "p99<100ms"): False,
        (1, "error_rate<1%"): True,
    }
    fast_summary, slow_summary = (p.summary for p in result.points)
    assert fast_summary is not None and slow_summary is not None
    assert slow_summary.goodput_per_s == pytest.approx(0.9 * slow_summary.throughput_per_s)
    assert fast_summary.goodput_per_s == pytest.approx(fast_summary.throughput_per_s)


def test_a_point_whose_generator_fell_behind_fails_every_gate() -> None:
    point = synthetic_point(0, [10.0] * 1000)
    point.late_sends = 50  # 5 % of sends left late: above the 1 % limit
    result = synthetic_result([point], slo="p99<100ms")
    assert not result.valid
    assert result.slo is not None and not result.slo.passed
    assert "generator fell behind" in result.slo.verdicts[0].note
    assert any("INVALID" in w for w in result.warnings)


def test_thin_samples_are_noted_on_the_verdict() -> None:
    result = synthetic_result([synthetic_point(0, [10.0] * 100)], slo="p99<100ms")
    assert result.slo is not None and result.slo.passed
    assert "not trustworthy" in result.slo.verdicts[0].note


def test_evaluate_without_points_passes_vacuously() -> None:
    assert evaluate(parse_slo("p99<1ms"), []).passed
