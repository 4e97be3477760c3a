"""The step gate: canary window against the baseline's, with minimum sample counts."""

from __future__ import annotations

from modelfleet.config.rollout import RolloutGates
from modelfleet.fleet.split import Window
from modelfleet.operate.rollout_gate import judge

GATES = RolloutGates(
    min_requests=50, max_error_rate_increase_percent=1.0, max_p99_ratio=1.5, p99_slack_ms=5.0
)
BASELINE = Window(requests=500, errors=5, p99_s=0.020)


def test_too_few_canary_requests_is_no_verdict_yet() -> None:
    verdict = judge(BASELINE, Window(requests=49, errors=49, p99_s=1.0), GATES)
    assert verdict.passed is None and "gates.min_requests" in verdict.reason


def test_error_rate_over_the_baseline_plus_the_allowance_breaches() -> None:
    assert judge(BASELINE, Window(requests=100, errors=2, p99_s=0.02), GATES).passed is True  # 2 % ≤ 1 % + 1
    verdict = judge(BASELINE, Window(requests=100, errors=3, p99_s=0.02), GATES)
    assert verdict.passed is False and "gates.max_error_rate_increase_percent" in verdict.reason


def test_p99_over_ratio_plus_slack_breaches() -> None:
    assert judge(BASELINE, Window(requests=100, errors=0, p99_s=0.0349), GATES).passed is True  # 20 × 1.5 + 5
    verdict = judge(BASELINE, Window(requests=100, errors=0, p99_s=0.0351), GATES)
    assert verdict.passed is False and "gates.max_p99_ratio" in verdict.reason


def test_latency_is_not_judged_against_a_baseline_with_too_few_requests() -> None:
    thin = Window(requests=10, errors=0, p99_s=0.001)
    assert judge(thin, Window(requests=100, errors=0, p99_s=0.5), GATES).passed is True
