"""Checks over saved evidence: the registry's records, bench, tune and chaos results, drift reports, drills.

Pure functions of the review's inputs. Behaviour checks prefer a drill run in this review (fresh, age 0)
over saved chaos results; a result older than `review.max_result_age_s` fails as stale.
"""

from __future__ import annotations

from typing import Any

from modelfleet.review.inputs import RegistryEvidence, ReviewInputs, Saved
from modelfleet.review.types import Evidence, Outcome

NO_REGISTRY = "no registry (give --registry DIR, or serve models by `ref` from one)"


def _served(inputs: ReviewInputs) -> list[str] | None:
    return [model.name for model in inputs.spec.models] if inputs.spec is not None else None


def _stale(inputs: ReviewInputs, saved: Saved, where: str) -> Evidence | None:
    limit = inputs.config.max_result_age_s
    if saved.age_s <= limit:
        return None
    return Evidence(
        where,
        f"written {saved.age_s / 86400:.1f} days ago",
        f"<= {limit / 86400:g} days (review.max_result_age_s)",
        age_s=saved.age_s,
    )


def _registry(inputs: ReviewInputs) -> RegistryEvidence | Outcome:
    if inputs.registry is None:
        return Outcome("unanswered", (), NO_REGISTRY)
    return inputs.registry


def _per_version(inputs: ReviewInputs, judge: Any, expected: str) -> Outcome:
    registry = _registry(inputs)
    if isinstance(registry, Outcome):
        return registry
    failures = [
        Evidence(f"fleet model {name}", "served from a path, not from the registry", expected)
        for name in registry.unresolved
    ]
    passes: list[Evidence] = []
    for version in registry.versions:
        ok, observed = judge(version)
        (passes if ok else failures).append(Evidence(f"{version.ref} ({registry.root})", observed, expected))
    return Outcome.of(failures, passes)


def previous_version_kept(inputs: ReviewInputs) -> Outcome:
    return _per_version(
        inputs,
        lambda v: (v.version_count >= 2, f"{v.version_count} version(s) registered"),
        ">= 2 versions (one to roll back to)",
    )


def lineage_complete(inputs: ReviewInputs) -> Outcome:
    return _per_version(
        inputs,
        lambda v: (
            not v.lineage_missing,
            "lineage complete" if not v.lineage_missing else f"lineage lacks {', '.join(v.lineage_missing)}",
        ),
        "lineage: source, source_uri, training_data_uri",
    )


def signatures_present(inputs: ReviewInputs) -> Outcome:
    return _per_version(
        inputs, lambda v: (v.signed, "signed" if v.signed else "no signature"), "at least one signature"
    )


def registry_verify_clean(inputs: ReviewInputs) -> Outcome:
    registry = _registry(inputs)
    if isinstance(registry, Outcome):
        return registry
    where = f"registry verify ({registry.root})"
    if registry.verify_problems:
        return Outcome(
            "fail", tuple(Evidence(where, problem, "no problem") for problem in registry.verify_problems)
        )
    return Outcome(
        "pass", (Evidence(where, f"{registry.verified_versions} version(s) verified clean", "no problem"),)
    )


def recent_export(inputs: ReviewInputs) -> Outcome:
    registry = _registry(inputs)
    if isinstance(registry, Outcome):
        return registry
    limit = inputs.config.max_export_age_s
    where = f"{registry.root}/audit.jsonl registry.export"
    expected = f"an export within {limit / 86400:g} days (review.max_export_age_s)"
    age = registry.last_export_age_s
    if age is None:
        return Outcome("fail", (Evidence(where, "never exported", expected),))
    ev = Evidence(where, f"last export {age / 3600:.1f} h ago", expected, age_s=age)
    return Outcome("pass" if age <= limit else "fail", (ev,))


def _scenario(chaos: Saved, name: str) -> dict[str, Any] | None:
    return next((s for s in chaos.data["scenarios"] if s.get("name") == name), None)


def _verdict(scenario: dict[str, Any], starts: str) -> dict[str, Any] | None:
    return next(
        (v for v in scenario.get("verdicts", []) if str(v.get("target", "")).startswith(starts)), None
    )


def overload_fast_refusal(inputs: ReviewInputs) -> Outcome:
    limit = inputs.config.fast_refusal_ms
    expected_fast = f"503 p99 <= {limit:g} ms (review.fast_refusal_ms)"
    drill = inputs.drill
    if drill is not None and drill.burst_requests:
        where = f"drill: overload burst of {drill.burst_requests} requests"
        refused = drill.burst_outcomes.get("http_503", 0)
        evidence = [
            Evidence(where, f"outcomes {drill.burst_outcomes}", "some 503, no timeouts", age_s=0.0),
            Evidence(where, f"503 p99 {drill.refusal_p99_ms} ms", expected_fast, age_s=0.0),
            Evidence(where, drill.recovery_note, "a normal request succeeds after the burst", age_s=0.0),
        ]
        if refused == 0 and drill.timeouts == 0 and drill.burst_outcomes.get("ok", 0) == drill.burst_requests:
            # Everything served: the burst did not overload the fleet, which says nothing of how it degrades.
            return Outcome(
                "unanswered",
                tuple(evidence[:1]),
                "the burst did not overload the fleet; raise review.overload_burst_requests and "
                "review.overload_concurrency",
            )
        fast = drill.refusal_p99_ms is not None and drill.refusal_p99_ms <= limit
        ok = refused > 0 and drill.timeouts == 0 and fast and bool(drill.recovered)
        return Outcome("pass" if ok else "fail", tuple(evidence))
    if inputs.chaos is None:
        return Outcome("unanswered", (), "no chaos results (benchmarks/results/chaos.json) and no --drill")
    scenario = _scenario(inputs.chaos, "overload")
    if scenario is None:
        return Outcome("unanswered", (), f"{inputs.chaos.path} has no overload scenario")
    age = inputs.chaos.age_s
    base = f"{inputs.chaos.path} scenarios[overload]"
    p99 = (scenario.get("figures", {}).get("refused_503") or {}).get("p99_ms")
    timeouts = _verdict(scenario, "0 timeouts")
    recovery = _verdict(scenario, "p99 back")
    evidence = [Evidence(f"{base}.figures.refused_503.p99_ms", f"{p99} ms", expected_fast, age_s=age)]
    for verdict in (timeouts, recovery):
        if verdict is not None:
            evidence.append(
                Evidence(
                    f"{base} verdict '{verdict['target']}'",
                    f"{verdict['status']}: {verdict.get('figure', '')}",
                    "PASS",
                    age_s=age,
                )
            )
    stale = _stale(inputs, inputs.chaos, inputs.chaos.path)
    ok = (
        p99 is not None
        and p99 <= limit
        and all(v is not None and v.get("status") == "PASS" for v in (timeouts, recovery))
    )
    if stale is not None:
        return Outcome("fail", (stale, *evidence), "stale evidence")
    return Outcome("pass" if ok else "fail", tuple(evidence))


def kill_healed(inputs: ReviewInputs) -> Outcome:
    limit = inputs.config.heal_within_s
    expected = f"ready again within {limit:g} s (review.heal_within_s)"
    drill = inputs.drill
    if drill is not None and drill.killed is not None:
        where = f"drill: kill -9 of {drill.killed}"
        observed = (
            "not ready again within the drill"
            if drill.healed_s is None
            else f"ready again after {drill.healed_s:.2f} s"
        )
        ok = drill.healed_s is not None and drill.healed_s <= limit
        return Outcome("pass" if ok else "fail", (Evidence(where, observed, expected, age_s=0.0),))
    if inputs.chaos is None:
        return Outcome("unanswered", (), "no chaos results (benchmarks/results/chaos.json) and no --drill")
    scenario = _scenario(inputs.chaos, "kill")
    if scenario is None:
        return Outcome("unanswered", (), f"{inputs.chaos.path} has no kill scenario")
    age = inputs.chaos.age_s
    ready = scenario.get("figures", {}).get("ready_again_s")
    failed = _verdict(scenario, "0 failed")
    evidence = [
        Evidence(
            f"{inputs.chaos.path} scenarios[kill].figures.ready_again_s", f"{ready} s", expected, age_s=age
        )
    ]
    if failed is not None:
        evidence.append(
            Evidence(
                f"{inputs.chaos.path} scenarios[kill] verdict '{failed['target']}'",
                f"{failed['status']}: {failed.get('figure', '')}",
                "PASS",
                age_s=age,
            )
        )
    stale = _stale(inputs, inputs.chaos, inputs.chaos.path)
    if stale is not None:
        return Outcome("fail", (stale, *evidence), "stale evidence")
    ok = (
        isinstance(ready, int | float)
        and ready <= limit
        and (failed is None or failed.get("status") == "PASS")
    )
    return Outcome("pass" if ok else "fail", tuple(evidence))


def heal_notified(inputs: ReviewInputs) -> Outcome:
    drill = inputs.drill
    if drill is None or drill.notified is None:
        return Outcome("unanswered", (), "needs --drill (kill one replica, then look for its notification)")
    ev = Evidence(
        f"drill: notification of the restart of {drill.killed}",
        drill.notification_note,
        "a replica_restarted event delivered to the fleet's sinks",
        age_s=0.0,
    )
    return Outcome("pass" if drill.notified else "fail", (ev,))


def bench_at_slo(inputs: ReviewInputs) -> Outcome:
    if not inputs.bench:
        return Outcome(
            "unanswered", (), "no bench results (give --results DIR with `modelfleet bench run` output)"
        )
    served = _served(inputs)
    versions = {v.model: v.ref.split(":", 1)[1] for v in inputs.registry.versions} if inputs.registry else {}
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    missing: list[str] = []
    names = (
        served if served is not None else sorted({m.name for s in inputs.bench for m in s.data.run.models})
    )
    for name in names:
        runs = [
            s
            for s in inputs.bench
            if any(m.name == name for m in s.data.run.models) and s.data.slo is not None
        ]
        if not runs:
            missing.append(name)
            continue
        saved = min(runs, key=lambda s: s.age_s)
        result = saved.data
        where = f"{saved.path} slo ({', '.join(result.slo.gates)})"
        stale = _stale(inputs, saved, saved.path)
        benched = next(m.versions for m in result.run.models if m.name == name)
        if stale is not None:
            failures.append(stale)
        elif name in versions and benched and versions[name] not in benched:
            failures.append(
                Evidence(
                    f"{saved.path} run.models[{name}].versions",
                    f"benchmarked version(s) {benched}",
                    f"the served version {versions[name]}",
                    age_s=saved.age_s,
                )
            )
        else:
            figures = "; ".join(f"{v.gate}={v.value}" for v in result.slo.verdicts)
            (passes if result.slo.passed else failures).append(
                Evidence(
                    where,
                    f"{name}: {'passed' if result.slo.passed else 'failed'} ({figures})",
                    "every gate passed",
                    age_s=saved.age_s,
                )
            )
    if missing and not failures:
        return Outcome("unanswered", tuple(passes), f"no bench result with an SLO for {', '.join(missing)}")
    return Outcome.of(failures, passes)


def tune_priced(inputs: ReviewInputs) -> Outcome:
    if inputs.tune is None:
        return Outcome("unanswered", (), "no tune results (give --results DIR with `modelfleet tune` output)")
    saved = inputs.tune
    result = saved.data
    stale = _stale(inputs, saved, saved.path)
    if stale is not None:
        return Outcome("fail", (stale,), "stale evidence")
    if result.recommendation is None:
        return Outcome(
            "fail",
            (
                Evidence(
                    f"{saved.path}#/recommendation",
                    f"status {result.status}, no recommendation",
                    "a priced recommendation",
                    age_s=saved.age_s,
                ),
            ),
        )
    trial = result.trial(result.recommendation.key)
    ev = Evidence(
        f"{saved.path}#/trials[{trial.key}]/cost_per_million",
        f"{trial.label}: ${trial.cost_per_million}/M conforming, fleet ${trial.fleet_price_per_h}/h",
        "a cost per million conforming inferences",
        age_s=saved.age_s,
    )
    return Outcome("pass" if trial.cost_per_million is not None else "fail", (ev,))


def drift_fresh(inputs: ReviewInputs) -> Outcome:
    if inputs.drift is None:
        return Outcome("unanswered", (), "no drift reports (the fleet's drift folder is missing)")
    served = _served(inputs) or sorted(inputs.drift)
    limit = inputs.config.max_drift_age_s
    expected = f"an assessment within {limit / 3600:g} h (review.max_drift_age_s)"
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    missing: list[str] = []
    for name in served:
        saved = inputs.drift.get(name)
        if saved is None:
            missing.append(name)
            continue
        ev = Evidence(
            f"{saved.path} (last line)",
            f"{name}: last assessment {saved.age_s / 3600:.1f} h ago, drifted {saved.data.get('drifted')}",
            expected,
            age_s=saved.age_s,
        )
        (passes if saved.age_s <= limit else failures).append(ev)
    if missing and not failures:
        return Outcome("unanswered", tuple(passes), f"no drift report for {', '.join(missing)}")
    return Outcome.of(failures, passes)
