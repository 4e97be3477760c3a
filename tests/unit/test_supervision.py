"""The one restart policy: doubling back-off with a cap, reset after stable uptime, giving up on the
exit codes of permanent errors from the error tree, for the worker pool and the fleet supervisor."""

from __future__ import annotations

import pytest

from modelfleet.config.fleet import LocalConfig
from modelfleet.errors import (
    Conflict,
    DeadlineExceeded,
    GateFailed,
    IntegrityError,
    InvalidInput,
    ModelfleetError,
    NotFound,
    PayloadTooLarge,
    SpecError,
    StorageError,
    Unauthorized,
    Unavailable,
    VerificationFailed,
)
from modelfleet.fleet.supervisor import restart_policy
from modelfleet.server.runner import WORKER_RESTARTS
from modelfleet.supervision import GiveUp, Restart, RestartPolicy


def _delays(policy: RestartPolicy, count: int, uptime_s: float = 0.0) -> list[float]:
    delays, failures = [], 0
    for _ in range(count):
        restart = policy.backoff(uptime_s, failures)
        delays.append(restart.delay_s)
        failures = restart.failures
    return delays


def test_the_wait_doubles_after_each_failure_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=0.2, max_s=2.0, stable_after_s=60.0)
    assert _delays(policy, 7) == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


def test_a_process_that_stayed_ready_long_enough_starts_again_from_the_initial_wait() -> None:
    policy = RestartPolicy(initial_s=0.5, max_s=30.0, stable_after_s=60.0)
    assert policy.backoff(uptime_s=60.0, failures=5) == Restart(delay_s=0.5, failures=1)
    assert policy.backoff(uptime_s=3600.0, failures=40) == Restart(delay_s=0.5, failures=1)
    # Just short of stable: the count goes on.
    assert policy.backoff(uptime_s=59.9, failures=3) == Restart(delay_s=4.0, failures=4)


def test_a_process_failing_for_days_waits_the_cap_without_overflowing() -> None:
    policy = RestartPolicy(initial_s=0.5, max_s=30.0)
    assert policy.backoff(0.0, failures=100_000) == Restart(delay_s=30.0, failures=100_001)


@pytest.mark.parametrize(
    "error", [InvalidInput, SpecError, PayloadTooLarge, NotFound, IntegrityError, VerificationFailed]
)
def test_exit_codes_of_permanent_errors_give_up(error: type[ModelfleetError]) -> None:
    code = error("x").exit_code
    assert WORKER_RESTARTS.after_exit(code, uptime_s=0.0, failures=0) == GiveUp(exit_code=code)
    assert WORKER_RESTARTS.after_exit(code, uptime_s=3600.0, failures=9) == GiveUp(exit_code=code)


@pytest.mark.parametrize(
    "error",
    [
        ModelfleetError,
        Unavailable,
        StorageError,
        DeadlineExceeded,
        Conflict,
        Unauthorized,
        GateFailed,
    ],
)
def test_exit_codes_of_other_errors_restart(error: type[ModelfleetError]) -> None:
    decision = WORKER_RESTARTS.after_exit(error("x").exit_code, uptime_s=0.0, failures=0)
    assert decision == Restart(delay_s=WORKER_RESTARTS.initial_s, failures=1)


@pytest.mark.parametrize("exit_code", [None, 0, 1, 137])
def test_a_crash_a_signal_or_a_clean_exit_restarts(exit_code: int | None) -> None:
    # None: killed by a signal. 0: a worker has no business exiting while the pool runs.
    assert isinstance(WORKER_RESTARTS.after_exit(exit_code, uptime_s=1.0, failures=2), Restart)


def test_the_worker_pool_waits_at_most_ten_seconds() -> None:
    assert _delays(WORKER_RESTARTS, 7) == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0])


def test_the_fleet_policy_comes_from_the_spec_local_settings() -> None:
    config = LocalConfig(restart_backoff_initial_s=0.2, restart_backoff_max_s=1.0, stable_after_s=5.0)
    policy = restart_policy(config)
    assert _delays(policy, 5) == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff(uptime_s=5.0, failures=4).delay_s == 0.2
    # An initial wait above the cap is accepted, as the spec accepts it: every wait is the cap.
    assert _delays(restart_policy(LocalConfig(restart_backoff_initial_s=60.0)), 2) == [30.0, 30.0]


def test_a_policy_without_a_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RestartPolicy(initial_s=0.0)
