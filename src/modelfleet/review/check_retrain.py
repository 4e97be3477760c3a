"""Is retraining gated? From the fleet spec (`models[].retrain`: triggers and gates) and the registry's
retraining history (each promoted run passed every gate it ran).

Drift-triggered retraining (`models[].retrain`, modelfleet.drift.retrain) may not be in this modelfleet:
a FleetModelConfig without a `retrain` field, or a registry without a retraining history, leaves that side
UNANSWERED rather than passed.
"""

from __future__ import annotations

from typing import Any

from modelfleet.review.inputs import RetrainRun, ReviewInputs
from modelfleet.review.types import Evidence, Outcome

EXPECTED = "models[].retrain with triggers and at least one quality gate; promoted runs passed every gate"


def _quality_gates_off(gates: Any) -> bool:
    """Every quality gate at the bound that lets anything through (latency alone gates nothing learnt)."""
    return (
        float(gates.min_accuracy_delta) <= -1
        and float(gates.min_agreement) <= 0
        and float(gates.min_cosine) <= -1
    )


def judge_retrain(
    where: str, name: str, config: Any, runs: tuple[RetrainRun, ...] | None
) -> tuple[bool, list[Evidence]]:
    """(ok, evidence) for one fleet model: its `retrain` settings (None: none) and its recorded runs."""
    if config is None:
        return False, [
            Evidence(where, f"{name}: no retrain settings (never retrained, nothing gated)", EXPECTED)
        ]
    triggers = config.triggers
    started_by = [
        label
        for label, on in (
            ("drift", triggers.on_drift),
            (f"error rate > {triggers.error_rate_percent}%", triggers.error_rate_percent is not None),
            ("schedule", triggers.schedule_interval_s is not None or triggers.schedule_daily_at is not None),
        )
        if on
    ] or ["`modelfleet retrain` only"]
    gates = config.gates
    observed = (
        f"{name}: retrain on {', '.join(started_by)}; gates accuracy delta >= {gates.min_accuracy_delta}, "
        f"agreement >= {gates.min_agreement}, cosine >= {gates.min_cosine}, "
        f"p99 <= {gates.max_p99_latency_ratio}x"
    )
    ok = not _quality_gates_off(gates)
    evidence = [Evidence(f"{where}/gates", observed + ("" if ok else " (every quality gate off)"), EXPECTED)]
    for run in runs or ():
        failed = [gate for gate, passed in run.gates if not passed]
        if run.outcome == "promoted" and (failed or not run.gates):
            ok = False
            reason = f"gate(s) {', '.join(failed)} failed" if failed else "no gate ran"
            evidence.append(
                Evidence(
                    f"registry retraining run {run.id}",
                    f"{name}: promoted version {run.new_version} although {reason}",
                    "a promoted run passed every gate",
                )
            )
    if runs:
        outcomes = {o: sum(1 for r in runs if r.outcome == o) for o in sorted({r.outcome for r in runs})}
        evidence.append(
            Evidence(f"registry retraining history of {name}", f"{len(runs)} run(s): {outcomes}", EXPECTED)
        )
    return ok, evidence


def retraining_gated(inputs: ReviewInputs) -> Outcome:
    spec = inputs.spec
    if spec is None:
        return Outcome("unanswered", (), "no fleet spec (retraining is set per model under models[].retrain)")
    if not spec.models or "retrain" not in type(spec.models[0]).model_fields:
        return Outcome(
            "unanswered",
            (),
            "this modelfleet has no models[].retrain (drift-triggered retraining); nothing to judge",
        )
    history = inputs.registry.retraining if inputs.registry is not None else None
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for index, model in enumerate(spec.models):
        runs = None if history is None else history.get(model.name, ())
        ok, evidence = judge_retrain(
            f"{inputs.spec_path}#/models/{index}/retrain", model.name, getattr(model, "retrain", None), runs
        )
        (passes if ok else failures).extend(evidence)
    note = "" if history is not None else "spec only: no registry retraining history was read"
    return Outcome.of(failures, passes, note)
