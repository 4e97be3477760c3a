"""The "retraining gated" check: judged from a model's `retrain:` settings and its registry retraining history;
UNANSWERED where this modelfleet has no `models[].retrain` or no spec."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from modelfleet.config.fleet import FleetSpec
from modelfleet.config.review import ReviewConfig
from modelfleet.review.check_retrain import judge_retrain, retraining_gated
from modelfleet.review.inputs import RetrainRun, ReviewInputs

# The fields of drift-retrain's RetrainConfig that the check reads, at their defaults.
TRIGGERS = {
    "on_drift": True,
    "error_rate_percent": None,
    "schedule_interval_s": None,
    "schedule_daily_at": None,
}
GATES = {"min_accuracy_delta": 0.0, "min_agreement": 0.5, "min_cosine": 0.9, "max_p99_latency_ratio": 2.0}


def _config(**gates: float) -> SimpleNamespace:
    return SimpleNamespace(triggers=SimpleNamespace(**TRIGGERS), gates=SimpleNamespace(**{**GATES, **gates}))


def _spec() -> FleetSpec:
    return FleetSpec.model_validate(
        {
            "name": "fleet",
            "models": [{"name": "iris", "path": "/a"}],
            "pools": [{"name": "cpu", "replicas": 2}],
        }
    )


def test_default_gates_pass_with_what_starts_a_run() -> None:
    ok, evidence = judge_retrain("fleet.yaml#/models/0/retrain", "iris", _config(), None)
    assert ok and evidence[0].where == "fleet.yaml#/models/0/retrain/gates"
    assert evidence[0].observed.startswith("iris: retrain on drift; gates accuracy delta >= 0.0")


def test_no_retrain_settings_or_every_quality_gate_off_fails() -> None:
    ok, evidence = judge_retrain("w", "iris", None, None)
    assert not ok and "no retrain settings" in evidence[0].observed
    ok, evidence = judge_retrain(
        "w", "iris", _config(min_accuracy_delta=-1, min_agreement=0, min_cosine=-1), None
    )
    assert not ok and evidence[0].observed.endswith("(every quality gate off)")


def test_the_registry_history_fails_a_run_promoted_past_a_failed_gate() -> None:
    good = RetrainRun("r1", "promoted", 2, (("accuracy", True), ("latency", True)))
    rejected = RetrainRun("r2", "rejected", 3, (("accuracy", False),))
    ok, evidence = judge_retrain("w", "iris", _config(), (good, rejected))
    assert ok and evidence[-1].observed == "2 run(s): {'promoted': 1, 'rejected': 1}"
    bad = RetrainRun("r3", "promoted", 4, (("accuracy", True), ("latency", False)))
    ungated = RetrainRun("r4", "promoted", 5, ())
    ok, evidence = judge_retrain("w", "iris", _config(), (good, bad, ungated))
    assert not ok
    observed = [e.observed for e in evidence if e.where.startswith("registry retraining run")]
    assert observed == [
        "iris: promoted version 4 although gate(s) latency failed",
        "iris: promoted version 5 although no gate ran",
    ]


def test_unanswered_without_a_spec_or_without_models_retrain() -> None:
    assert retraining_gated(ReviewInputs(now=time.time(), config=ReviewConfig())).status == "unanswered"
    from modelfleet.config.fleet import FleetModelConfig

    outcome = retraining_gated(ReviewInputs(now=time.time(), config=ReviewConfig(), spec=_spec()))
    if "retrain" in FleetModelConfig.model_fields:  # drift-triggered retraining merged: no retrain: fails
        assert outcome.status == "fail" and "no retrain settings" in outcome.evidence[0].observed
    else:
        assert outcome.status == "unanswered" and "models[].retrain" in outcome.note


def test_a_real_retrain_config_is_judged_from_the_spec() -> None:
    pytest.importorskip("modelfleet.config.retrain")  # drift-triggered retraining (branch drift-retrain)
    spec = FleetSpec.model_validate(
        {
            "name": "fleet",
            "models": [{"name": "iris", "path": "/a", "retrain": {"command": ["train"], "gates": GATES}}],
            "pools": [{"name": "cpu", "replicas": 2}],
        }
    )
    outcome = retraining_gated(
        ReviewInputs(now=time.time(), config=ReviewConfig(), spec=spec, spec_path="f.yaml")
    )
    assert outcome.status == "pass" and outcome.evidence[0].where == "f.yaml#/models/0/retrain/gates"
    assert outcome.note == "spec only: no registry retraining history was read"
