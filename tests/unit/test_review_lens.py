"""The AWS Well-Architected custom lens and answers: every format constraint, and the risk-rule parser."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jsonschema
import pytest

from modelfleet.config.review import ReviewConfig
from modelfleet.errors import InvalidInput
from modelfleet.review import collect, lens, outputs
from modelfleet.review.engine import run_review
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.rules import evaluate, rule_risk

GUIDANCE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "guidance"
_ID = re.compile(r"^[A-Za-z0-9_]{3,128}$")
_LENS_RISK = {"NO_RISK": "NONE", "MEDIUM_RISK": "MEDIUM", "HIGH_RISK": "HIGH"}


@pytest.fixture(scope="module")
def guidance_review():  # type: ignore[no-untyped-def]
    inputs = ReviewInputs(now=time.time(), config=ReviewConfig(), manifests=collect.read_manifests(GUIDANCE))
    return run_review(inputs, str(GUIDANCE), {})


@pytest.mark.parametrize(
    ("condition", "selected", "expected"),
    [
        ("a_1 && b_1", {"a_1", "b_1"}, True),
        ("a_1 && b_1", {"a_1"}, False),
        ("a_1 || b_1", {"b_1"}, True),
        ("!a_1", set(), True),
        ("!(a_1 || b_1) && c_1", {"c_1"}, True),
        ("a_1 || b_1 && c_1", {"a_1"}, True),  # && binds tighter than ||
        ("(a_1 || b_1) && c_1", {"a_1"}, False),
        ("!!a_1", {"a_1"}, True),
        ("default", set(), True),
    ],
)
def test_rule_parser(condition: str, selected: set[str], expected: bool) -> None:
    assert evaluate(condition, selected) is expected


@pytest.mark.parametrize("bad", ["a_1 &&", "(a_1", "a_1 b_1", "a_1 & b_1", "__import__('os')", "a_1)"])
def test_rule_parser_refuses_malformed_conditions(bad: str) -> None:
    with pytest.raises(InvalidInput):
        evaluate(bad, {"a_1"})


def test_lens_follows_the_format() -> None:
    document = lens.build_lens()
    assert document["schemaVersion"] == "2021-11-01"
    assert len(json.dumps(document).encode()) <= 500 * 1024
    assert len(document["name"]) <= 128 and len(document["description"]) <= 2048
    # Limits of the lens format and of the WA Tool API that stores it: PillarId and ChoiceId 1-64, QuestionId
    # 1-128, titles 512 (question, choice), descriptions and ChoiceContent displayText / url 1024, pillar name 128.
    assert len({p["id"] for p in document["pillars"]}) == len(document["pillars"])
    question_ids = [q["id"] for p in document["pillars"] for q in p["questions"]]
    assert len(set(question_ids)) == len(question_ids)
    for pillar in document["pillars"]:
        assert _ID.match(pillar["id"]) and len(pillar["id"]) <= 64 and len(pillar["name"]) <= 128
        assert pillar["questions"]
        for question in pillar["questions"]:
            assert _ID.match(question["id"]) and len(question["title"]) <= 512
            assert len(question.get("description", "")) <= 1024
            ids = [c["id"] for c in question["choices"]]
            assert all(_ID.match(i) and len(i) <= 64 for i in ids) and len(set(ids)) == len(ids)
            assert [i for i in ids if i.endswith("_no")] == [f"{question['id']}_no"]
            for choice in question["choices"]:
                assert 1 <= len(choice["title"]) <= 512 and len(choice.get("description", "")) <= 1024
                if choice["id"].endswith("_no"):
                    assert "improvementPlan" not in choice  # "None of these" needs no plan
                    continue
                plan, helpful = choice["improvementPlan"], choice["helpfulResource"]
                assert set(plan) <= {"displayText", "url"} and set(helpful) <= {"displayText", "url"}
                for content in (plan, helpful):
                    assert 1 <= len(content["displayText"]) <= 1024
                    assert content["url"].startswith("https://") and len(content["url"]) <= 1024
            rules = question["riskRules"]
            assert 1 <= len(rules) <= 3 and rules[-1]["condition"] == "default"
            assert [r["condition"] for r in rules].count("default") == 1
            assert all(set(r) == {"condition", "risk"} for r in rules)
            assert {r["risk"] for r in rules} <= {"HIGH_RISK", "MEDIUM_RISK", "NO_RISK"}
            for rule in rules:  # every condition parses and names only this question's choices
                names = set(re.findall(r"[A-Za-z0-9_]+", rule["condition"])) - {"default"}
                assert names <= set(ids)
                evaluate(rule["condition"], set())


def test_answers_reproduce_the_review_risk_through_the_lens_rules(guidance_review) -> None:  # type: ignore[no-untyped-def]
    document = lens.build_lens()
    rules = {q["id"]: q["riskRules"] for p in document["pillars"] for q in p["questions"]}
    answers = lens.build_answers(guidance_review)
    for answer in answers["answers"]:
        for update in answer["ChoiceUpdates"].values():
            assert update["Status"] in ("SELECTED", "UNSELECTED", "NOT_APPLICABLE")
            assert len(update["Notes"]) <= 250
            if update["Status"] != "SELECTED":
                # ChoiceUpdate.Reason's valid values; NOT_APPLICABLE is a Status only (the WA Tool API refuses it)
                assert update["Reason"] in (
                    "OUT_OF_SCOPE",
                    "BUSINESS_PRIORITIES",
                    "ARCHITECTURE_CONSTRAINTS",
                    "OTHER",
                    "NONE",
                )
        assert len(answer["Notes"]) <= 250
        if answer["ReviewRisk"] in ("HIGH", "MEDIUM", "NONE"):
            selected = set(answer["SelectedChoices"]) | {
                c for c, u in answer["ChoiceUpdates"].items() if u["Status"] == "NOT_APPLICABLE"
            }
            assert _LENS_RISK[rule_risk(rules[answer["QuestionId"]], selected)] == answer["ReviewRisk"], (
                answer["QuestionId"]
            )
    notes = next(a for a in answers["answers"] if a["QuestionId"] == "failure_management")["ChoiceUpdates"][
        "replicas_two_or_more"
    ]["Notes"]
    assert "1 replica(s), no HPA" in notes and "deploy.yaml[1]#/spec/replicas" in notes


_SARIF_MINIMAL_SCHEMA = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {"driver": {"type": "object", "required": ["name", "rules"]}},
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ruleId", "message", "level"],
                            "properties": {
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "items": {"type": "object", "required": ["physicalLocation"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_sarif_results_point_at_the_lines(guidance_review) -> None:  # type: ignore[no-untyped-def]
    sarif = outputs.to_sarif(guidance_review, None)
    jsonschema.validate(sarif, _SARIF_MINIMAL_SCHEMA)
    replicas = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "replicas_two_or_more")
    location = replicas["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("deploy.yaml")
    lines = (GUIDANCE / "deploy.yaml").read_text().splitlines()
    assert lines[location["region"]["startLine"] - 1].strip() == "replicas: 1"
    rules = sarif["runs"][0]["tool"]["driver"]["rules"]
    assert rules[replicas["ruleIndex"]]["id"] == "replicas_two_or_more"


def test_sarif_points_at_the_spec_field_for_rendered_manifests() -> None:
    from modelfleet.review.api import gather

    spec = Path(__file__).resolve().parents[2] / "examples" / "fleet-eks-guidance.yaml"
    inputs, _, spec_path = gather(str(spec))
    sarif = outputs.to_sarif(run_review(inputs, str(spec), {}), spec_path)
    digest = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "image_digest_pinned")
    line = digest["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert spec.read_text().splitlines()[line - 1].startswith("image:")


def test_html_is_self_contained_with_a_score_over_time(guidance_review) -> None:  # type: ignore[no-untyped-def]
    earlier = outputs.to_json(guidance_review)
    page = outputs.to_html(guidance_review, [earlier])
    assert "<script src" not in page and "<link" not in page
    assert page.count("<tr><td>" + str(GUIDANCE)) == 2  # two rows of the score table
    assert "replicas_two_or_more" in page


def test_long_texts_are_cut_to_the_format_limits() -> None:
    from dataclasses import replace

    catalog = lens.load_catalog()
    long = [replace(c, title="t" * 1500, remediation="r" * 3000) for c in catalog.checks]
    document = lens.build_lens(replace(catalog, checks=tuple(long)))
    choice = document["pillars"][0]["questions"][0]["choices"][0]
    assert len(choice["title"]) == 128 and choice["title"].endswith("…")
    assert len(choice["improvementPlan"]["displayText"]) == 1024
    assert len(choice["helpfulResource"]["displayText"]) == 1024
    assert len(json.dumps(document).encode()) <= lens.MAX_LENS_BYTES
