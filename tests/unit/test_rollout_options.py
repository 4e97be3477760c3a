"""`fleet rollout` flags and options: one clear error for each bad value, naming the flag."""

from __future__ import annotations

import pytest

from modelfleet.config.rollout import RolloutOptions, parse_duration_s, parse_percent, parse_steps
from modelfleet.errors import InvalidInput


def test_shares_durations_and_steps_parse() -> None:
    assert parse_percent("10%", "--canary") == 10.0 and parse_percent(" 2.5 ", "--canary") == 2.5
    assert parse_percent("0%", "--shadow", low_exclusive=False) == 0.0
    assert parse_steps("10, 50,100") == [10.0, 50.0, 100.0]
    assert [parse_duration_s(text, "--interval") for text in ("60s", "2m", "500ms", "1.5", "1h")] == [
        60.0, 120.0, 0.5, 1.5, 3600.0,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_percent("0%", "--canary"), r"--canary '0%': a share must be in \(0, 100\]"),
        (lambda: parse_percent("101", "--canary"), r"\(0, 100\]"),
        (lambda: parse_percent("-1", "--shadow", low_exclusive=False), r"\[0, 100\]"),
        (lambda: parse_percent("ten", "--canary"), "is not a share"),
        (lambda: parse_percent("nan", "--canary"), "a share must be in"),
        (lambda: parse_steps("10,50,50,100"), "strictly increasing"),
        (lambda: parse_steps("50,10,100"), "strictly increasing"),
        (lambda: parse_steps("10,50"), "the last step must be 100"),
        (lambda: parse_steps(","), "give shares"),
        (lambda: parse_duration_s("0s", "--interval"), "above 0"),
        (lambda: parse_duration_s("soon", "--interval"), "not a duration"),
    ],
)
def test_bad_values_are_one_line_errors(call: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        call()  # type: ignore[operator]
    assert "\n" not in caught.value.message and caught.value.exit_code == 2


def test_schedule_starts_at_the_canary_share() -> None:
    assert RolloutOptions().schedule_percent == [10.0, 50.0, 100.0]
    assert RolloutOptions(canary_percent=5, steps_percent=[10, 100]).schedule_percent == [5.0, 10.0, 100.0]
    assert RolloutOptions(canary_percent=60, steps_percent=[10, 50, 100]).schedule_percent == [60.0, 100.0]
    with pytest.raises(ValueError, match="last step must be 100"):
        RolloutOptions(steps_percent=[10, 50])
