"""The review's proof on configuration: the guidance's reference manifests are HIGH on failure management,
secure endpoint and least privilege (with the exact evidence); modelfleet's render of the EKS guidance spec
is NONE on those; saved chaos results answer the behavioural questions and their absence leaves them UNANSWERED."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from modelfleet.config.review import ReviewConfig
from modelfleet.errors import InvalidInput
from modelfleet.review import catalog, collect
from modelfleet.review.api import gather
from modelfleet.review.engine import exit_code, run_review
from modelfleet.review.functions import CHECK_FUNCTIONS
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import ReviewResult

ROOT = Path(__file__).resolve().parents[2]
GUIDANCE = ROOT / "tests" / "fixtures" / "guidance"
EKS_SPEC = ROOT / "examples" / "fleet-eks-guidance.yaml"
CHAOS = ROOT / "benchmarks" / "results" / "chaos.json"
PROOF = ("failure_management", "secure_endpoint", "least_privilege")


def _questions(result: ReviewResult) -> dict[str, str]:
    return {q.id: q.risk for q in result.questions}


def _finding(result: ReviewResult, check: str):  # type: ignore[no-untyped-def]
    return next(f for f in result.findings() if f.check == check)


def test_every_check_has_exactly_one_function() -> None:
    ids = {c.id for c in catalog.load_catalog().checks}
    assert ids == set(CHECK_FUNCTIONS)


def test_guidance_manifests_are_high_on_the_three_questions_with_exact_evidence() -> None:
    inputs = ReviewInputs(now=time.time(), config=ReviewConfig(), manifests=collect.read_manifests(GUIDANCE))
    result = run_review(inputs, str(GUIDANCE), {})
    risks = _questions(result)
    assert [risks[q] for q in PROOF] == ["HIGH", "HIGH", "HIGH"]
    deploy = str(GUIDANCE / "deploy.yaml")
    replicas = _finding(result, "replicas_two_or_more")
    assert replicas.risk == "HIGH"
    assert (replicas.evidence[0].where, replicas.evidence[0].observed) == (
        f"{deploy}[1]#/spec/replicas",
        "1 replica(s), no HPA",
    )
    probes = _finding(result, "probes_present")
    assert probes.evidence[0].observed == "container main: no readinessProbe and no livenessProbe"
    routing = _finding(result, "server_side_routing")
    assert routing.risk == "HIGH" and "client-side indexing" in routing.note
    assert (
        _finding(result, "network_policy").evidence[0].where == f"{deploy}[1]#/spec/template/metadata/labels"
    )
    assert _finding(result, "auth_enabled").risk == "HIGH"
    root = _finding(result, "non_root")
    assert root.risk == "HIGH" and "runAsNonRoot and runAsUser unset" in root.evidence[0].observed
    latest = _finding(result, "image_not_latest")
    assert latest.risk == "HIGH" and latest.evidence[0].observed.endswith("bert-base-workshop:latest")
    assert exit_code(result, "high") == 1


def test_default_render_of_the_eks_guidance_spec_is_none_on_the_three_questions() -> None:
    inputs, _, _ = gather(str(EKS_SPEC))
    result = run_review(inputs, str(EKS_SPEC), {})
    risks = _questions(result)
    assert [risks[q] for q in PROOF] == ["NONE", "NONE", "NONE"]
    # Nothing is passed without evidence: every NONE finding carries what was seen.
    assert all(f.evidence for f in result.findings() if f.risk == "NONE")


def test_chaos_results_answer_behaviour_and_their_absence_leaves_it_unanswered(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    document = json.loads(CHAOS.read_text(encoding="utf-8"))
    kill = next(scenario for scenario in document["scenarios"] if scenario["name"] == "kill")
    lost = next(v for v in kill["verdicts"] if v["target"].startswith("0 failed"))
    for status, expected in (("PASS", "pass"), ("FAIL", "fail")):  # whatever the committed run measured
        lost["status"] = status
        (results / "chaos.json").write_text(json.dumps(document), encoding="utf-8")
        inputs, _, _ = gather(str(EKS_SPEC), results_dir=results)
        answered = run_review(inputs, "eks", {})
        overload = _finding(answered, "overload_fast_refusal")
        assert overload.status in ("pass", "fail")
        assert overload.evidence[0].where.endswith(
            "chaos.json scenarios[overload].figures.refused_503.p99_ms"
        )
        assert overload.evidence[0].age_s is not None
        # ready again in a few seconds against review.heal_within_s 30: the lost requests decide
        assert kill["figures"]["ready_again_s"] <= 30
        assert _finding(answered, "kill_healed").status == expected
    (results / "chaos.json").unlink()
    inputs, _, _ = gather(str(EKS_SPEC), results_dir=results)
    unanswered = _questions(run_review(inputs, "eks", {}))
    assert unanswered["graceful_degradation"] == "UNANSWERED"
    assert unanswered["self_healing"] == "UNANSWERED"


def test_stale_chaos_results_fail_as_stale(tmp_path: Path) -> None:
    stale = tmp_path / "chaos.json"
    shutil.copy(CHAOS, stale)
    old = time.time() - 60 * 86400
    os.utime(stale, (old, old))
    inputs, _, _ = gather(str(EKS_SPEC), results_dir=tmp_path)
    kill = _finding(run_review(inputs, "eks", {}), "kill_healed")
    assert kill.status == "fail" and kill.note == "stale evidence"


def test_a_results_file_of_another_schema_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(InvalidInput, match=r"other.json: not a bench, tune or chaos result"):
        collect.read_results_dir(tmp_path, time.time())


def test_docs_table_equals_the_generated_one() -> None:
    text = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
    assert catalog.docs_table(catalog.load_catalog()) in text


def test_catalog_rejects_a_hyphenated_id() -> None:
    from importlib import resources

    import yaml

    data = yaml.safe_load(resources.files("modelfleet.review").joinpath("checks.yaml").read_text())
    data["checks"][0]["id"] = "bad-id"
    with pytest.raises(ValueError, match="'bad-id' must be 3-64 of a-z"):
        catalog.parse_catalog(data)


def test_a_drill_burst_judged_by_its_figures() -> None:
    from modelfleet.review.check_saved import overload_fast_refusal
    from modelfleet.review.inputs import DrillEvidence

    def judge(**drill: object) -> str:
        base: dict[str, object] = {"burst_requests": 100, "recovered": True, "recovery_note": "ok"}
        inputs = ReviewInputs(now=0.0, config=ReviewConfig(), drill=DrillEvidence(**{**base, **drill}))  # type: ignore[arg-type]
        return overload_fast_refusal(inputs).status

    assert judge(burst_outcomes={"ok": 60, "http_503": 40}, refusal_p99_ms=3.0) == "pass"
    assert judge(burst_outcomes={"ok": 60, "http_503": 40}, refusal_p99_ms=51.0) == "fail"  # 50 ms default
    assert judge(burst_outcomes={"ok": 90, "http_503": 10}, refusal_p99_ms=3.0, timeouts=1) == "fail"
    assert judge(burst_outcomes={"ok": 60, "http_503": 40}, refusal_p99_ms=3.0, recovered=False) == "fail"
    assert judge(burst_outcomes={"ok": 95, "http_500": 5}) == "fail"  # errors, no refusal
    assert judge(burst_outcomes={"ok": 100}) == "unanswered"  # nothing was overloaded
