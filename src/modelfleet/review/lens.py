"""AWS Well-Architected Tool export: the checks as a custom lens, and a review's answers as ChoiceUpdates.

Lens format (schemaVersion 2021-11-01): pillars → questions → choices; a `<question>_no` "None of these"
choice per question; `improvementPlan` on every other choice; at most three risk rules, the last `default`
(first true condition wins); ids of 3-128 characters without hyphens (pillar and choice ids at most 64, as the WA Tool API's PillarId and
ChoiceId); the whole lens at most 500 KB.
Each check is one choice: selected when the check passed, so the lens's risk rules reproduce the review's
question risk (all selected → NO_RISK; every HIGH-risk check selected → MEDIUM_RISK; else HIGH_RISK).
"""

from __future__ import annotations

from typing import Any

from modelfleet import __version__
from modelfleet.review.catalog import Catalog, Check, load_catalog
from modelfleet.review.types import Finding, ReviewResult

SCHEMA_VERSION = "2021-11-01"
MAX_LENS_BYTES = 500 * 1024
MAX_NOTES_CHARS = 250  # ChoiceUpdate.Notes
MAX_TITLE_CHARS = 128  # lens name; question and choice titles may have 512, ours stay short
MAX_LENS_DESCRIPTION_CHARS = 2048
# The WA Tool API's Choice.Description, ChoiceContent.DisplayText and .Url, and the question descriptions
# it returns, take at most 1024 characters (the 2048 of the lens description does not apply to them).
MAX_TEXT_CHARS = 1024
# ChoiceUpdate.Reason's valid values (NOT_APPLICABLE is a Status, not a Reason).
CHOICE_REASONS = ("OUT_OF_SCOPE", "BUSINESS_PRIORITIES", "ARCHITECTURE_CONSTRAINTS", "OTHER", "NONE")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _choice(check: Check) -> dict[str, Any]:
    return {
        "id": check.id,
        "title": _cut(check.title, MAX_TITLE_CHARS),
        "description": _cut(
            f"Evidence: {', '.join(check.sources)}. Risk when it fails: {check.risk}.", MAX_TEXT_CHARS
        ),
        "helpfulResource": {"displayText": _cut(check.title, MAX_TEXT_CHARS), "url": check.doc},
        "improvementPlan": {"displayText": _cut(check.remediation, MAX_TEXT_CHARS), "url": check.doc},
    }


def risk_rules(checks: list[Check]) -> list[dict[str, str]]:
    every = " && ".join(c.id for c in checks)
    high = [c.id for c in checks if c.risk == "HIGH"]
    rules = [{"condition": every, "risk": "NO_RISK"}]
    if high and len(high) < len(checks):
        rules.append({"condition": " && ".join(high), "risk": "MEDIUM_RISK"})
    elif not high:
        rules.append({"condition": "default", "risk": "MEDIUM_RISK"})
        return rules
    rules.append({"condition": "default", "risk": "HIGH_RISK"})
    return rules


def build_lens(catalog: Catalog | None = None) -> dict[str, Any]:
    catalog = catalog or load_catalog()
    pillars = []
    for pillar in catalog.pillars:
        questions = []
        for question in catalog.questions:
            if question.pillar != pillar.id:
                continue
            checks = catalog.checks_of(question.id)
            questions.append(
                {
                    "id": question.id,
                    "title": _cut(question.title, MAX_TITLE_CHARS),
                    "description": _cut(
                        f"Best practices: {', '.join(question.best_practices)}.", MAX_TEXT_CHARS
                    ),
                    "choices": [_choice(c) for c in checks]
                    + [{"id": f"{question.id}_no", "title": "None of these"}],
                    "riskRules": risk_rules(checks),
                }
            )
        pillars.append({"id": pillar.id, "name": pillar.name, "questions": questions})
    return {
        "schemaVersion": SCHEMA_VERSION,
        "name": "modelfleet review",
        "description": f"Checks of `modelfleet review` {__version__}: ML serving answered from configuration, saved "
        "results and behaviour. Import the answers from `modelfleet review --export-answers`.",
        "pillars": pillars,
    }


def _notes(findings: list[Finding]) -> str:
    parts = []
    for finding in findings:
        first = finding.evidence[0] if finding.evidence else None
        seen = f"{first.observed} at {first.where}" if first else finding.note
        parts.append(f"{finding.check} {finding.risk}: {seen}")
    return _cut("; ".join(parts), MAX_NOTES_CHARS)


def build_answers(result: ReviewResult, catalog: Catalog | None = None) -> dict[str, Any]:
    """Per question, what `UpdateAnswer` takes: SelectedChoices, ChoiceUpdates (status, reason, notes), Notes."""
    catalog = catalog or load_catalog()
    answers = []
    for question in result.questions:
        choice_updates: dict[str, dict[str, str]] = {}
        selected = []
        for finding in question.findings:
            if finding.status == "pass":
                selected.append(finding.check)
                update = {"Status": "SELECTED"}
            elif finding.status == "not_applicable":
                update = {"Status": "NOT_APPLICABLE", "Reason": "OUT_OF_SCOPE"}
            elif finding.status == "unanswered":
                update = {"Status": "UNSELECTED", "Reason": "OTHER"}
            else:
                update = {"Status": "UNSELECTED", "Reason": "OTHER"}
            update["Notes"] = _notes([finding])
            choice_updates[finding.check] = update
        problems = [f for f in question.findings if f.status in ("fail", "unanswered")]
        answers.append(
            {
                "PillarId": question.pillar,
                "QuestionId": question.id,
                "SelectedChoices": selected,
                "ChoiceUpdates": choice_updates,
                "Notes": _notes(problems) if problems else "every check passed",
                "IsApplicable": True,
                "ReviewRisk": question.risk,
            }
        )
    return {"lensName": "modelfleet review", "schemaVersion": SCHEMA_VERSION, "answers": answers}
