"""Judge: run every check of the catalog on the inputs, then a risk per question and per pillar."""

from __future__ import annotations

from modelfleet.errors import ModelfleetError
from modelfleet.review.catalog import Catalog, load_catalog
from modelfleet.review.functions import CHECK_FUNCTIONS
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import Finding, Outcome, QuestionResult, ReviewResult, Risk, worst


def finding_risk(outcome: Outcome, risk_when_failed: str) -> Risk:
    if outcome.status == "pass":
        return "NONE"
    if outcome.status == "fail":
        return "HIGH" if risk_when_failed == "HIGH" else "MEDIUM"
    return "UNANSWERED" if outcome.status == "unanswered" else "NOT_APPLICABLE"


def run_review(
    inputs: ReviewInputs, target: str, sources: dict[str, str], catalog: Catalog | None = None
) -> ReviewResult:
    """Every check, then each question's risk (the worst of its findings: HIGH, MEDIUM, UNANSWERED, NONE)."""
    catalog = catalog or load_catalog()
    questions = []
    for question in catalog.questions:
        findings = []
        for check in catalog.checks_of(question.id):
            try:
                outcome = CHECK_FUNCTIONS[check.id](inputs)
            except ModelfleetError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # Evidence of an unexpected shape (hand-written YAML): the check cannot say, and says why.
                outcome = Outcome(
                    "unanswered", (), f"evidence of an unexpected shape: {type(exc).__name__}: {exc}"
                )
            risk = finding_risk(outcome, check.risk)
            findings.append(
                Finding(check.id, question.id, outcome.status, risk, outcome.evidence, outcome.note)
            )
        questions.append(
            QuestionResult(question.id, question.pillar, worst([f.risk for f in findings]), tuple(findings))
        )
    pillars = {
        pillar.id: worst([q.risk for q in questions if q.pillar == pillar.id]) for pillar in catalog.pillars
    }
    return ReviewResult(target, inputs.now, sources, tuple(questions), pillars)


def exit_code(result: ReviewResult, fail_on: str) -> int:
    """0 when no question is at or above `fail_on` (HIGH, or MEDIUM), 1 otherwise."""
    blocking = {"HIGH"} if fail_on == "high" else {"HIGH", "MEDIUM"}
    return 1 if any(q.risk in blocking for q in result.questions) else 0
