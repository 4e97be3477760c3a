"""RetrainConfig: exactly one hook, well-formed entry points and daily times, and a fleet model carries it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelfleet.config.fleet import FleetModelConfig
from modelfleet.config.retrain import RetrainConfig, RetrainTriggers


def test_exactly_one_hook_is_required() -> None:
    with pytest.raises(ValidationError, match="exactly one of `command`"):
        RetrainConfig()
    with pytest.raises(ValidationError, match="exactly one of `command`"):
        RetrainConfig(command=["train"], entry_point="pkg:main")
    with pytest.raises(ValidationError, match="must be `module:function`"):
        RetrainConfig(entry_point="pkg.main")


def test_daily_time_is_utc_hh_mm() -> None:
    assert RetrainTriggers(schedule_daily_at="03:30").schedule_daily_at == "03:30"
    with pytest.raises(ValidationError, match="HH:MM"):
        RetrainTriggers(schedule_daily_at="25:00")


def test_a_fleet_model_takes_a_retrain_section() -> None:
    model = FleetModelConfig.model_validate(
        {"name": "iris", "ref": "iris@production", "retrain": {"command": ["python", "train.py"]}}
    )
    assert model.retrain is not None and model.retrain.triggers.on_drift
    assert model.retrain.rollout.steps_percent[-1] == 100
