"""Re-verification: the winner on a fresh server at its per-replica target rate, against what its trial predicted."""

from __future__ import annotations

from modelfleet.bench.slo import Gate
from modelfleet.config.tune import TuneSpec
from modelfleet.tune.results import HardwareRecord, TrialRecord, Verification
from modelfleet.tune.space import Candidate
from modelfleet.tune.trial import generator_beside, measure, run_server


def _apart(predicted: float, measured: float) -> float:
    return abs(measured - predicted) / predicted if predicted > 0 else (0.0 if measured == 0 else 1.0)


def compare(
    key: str,
    rate_per_s: float,
    predicted: tuple[float, float | None],
    measured: tuple[float, float | None],
    tolerance: float,
    floor_ms: float,
) -> Verification:
    """Pass when goodput and p99 are each within ``tolerance`` of the prediction (p99 also when within
    ``floor_ms``, the timer's resolution)."""
    goodput_gap = _apart(predicted[0], measured[0])
    problems = []
    if goodput_gap > tolerance:
        problems.append(
            f"goodput {measured[0]:,.1f}/s vs predicted {predicted[0]:,.1f}/s ({goodput_gap:.0%} apart)"
        )
    if predicted[1] is not None and measured[1] is not None:
        p99_gap = _apart(predicted[1], measured[1])
        if p99_gap > tolerance and abs(measured[1] - predicted[1]) > floor_ms:
            problems.append(
                f"p99 {measured[1]:.2f} ms vs predicted {predicted[1]:.2f} ms ({p99_gap:.0%} apart)"
            )
    elif measured[1] is None:
        problems.append("no successful responses to measure p99 on")
    return Verification(
        key=key,
        rate_per_s=rate_per_s,
        predicted_goodput_per_s=predicted[0],
        measured_goodput_per_s=measured[0],
        predicted_p99_ms=predicted[1],
        measured_p99_ms=measured[1],
        tolerance=tolerance,
        floor_ms=floor_ms,
        passed=not problems,
        note="; ".join(problems) or f"within {tolerance:.0%}",
    )


def verify_winner(
    candidate: Candidate, trial: TrialRecord, hardware: HardwareRecord, spec: TuneSpec, gates: list[Gate]
) -> Verification:
    assert trial.at_target is not None, "only a trial that met the SLO can win"
    rate = trial.per_replica_rate_per_s
    with (
        run_server(candidate, hardware.cpus, hardware.memory_mib, spec.server_start_timeout_s) as server,
        generator_beside(hardware.cpus),
    ):
        probe = measure(server, rate, spec.capacity, spec.slo, gates, spec.seed + 1)
    return compare(
        trial.key,
        rate,
        (trial.at_target.goodput_per_s, trial.at_target.p99_ms),
        (probe.goodput_per_s, probe.p99_ms),
        spec.verify_tolerance,
        spec.verify_floor_ms,
    )
