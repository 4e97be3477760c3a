"""What the review parts hand each other: evidence, a check's outcome, findings and risks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Risk = Literal["HIGH", "MEDIUM", "NONE", "NOT_APPLICABLE", "UNANSWERED"]
Status = Literal["pass", "fail", "unanswered", "not_applicable"]
Source = Literal["spec", "manifests", "registry", "results", "live", "drill"]
# Worst first: a question's (and a pillar's) risk is the worst of its findings' risks in this order.
RISK_ORDER: tuple[Risk, ...] = ("HIGH", "MEDIUM", "UNANSWERED", "NONE", "NOT_APPLICABLE")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observation: where it was seen, what was seen, what was expected, and how old it is.

    `where` is a file and JSON pointer (``deployment-x.yaml#/spec/replicas``), a URL and status, a metric,
    or ``model@version field``. `file` and `pointer` (when the evidence is in a YAML file) let SARIF point
    at the line.
    """

    where: str
    observed: str
    expected: str
    age_s: float | None = None
    file: str | None = None
    pointer: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a check function found: pass, fail, or why it cannot say (no evidence, or not applicable)."""

    status: Status
    evidence: tuple[Evidence, ...] = ()
    note: str = ""

    @classmethod
    def of(cls, failures: list[Evidence], passes: list[Evidence], note: str = "") -> Outcome:
        """Fail with the failures when there are any; pass with what was seen otherwise; no evidence → unanswered."""
        if failures:
            return cls("fail", tuple(failures), note)
        if passes:
            return cls("pass", tuple(passes), note)
        return cls("unanswered", (), note or "no evidence available")


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    question: str
    status: Status
    risk: Risk
    evidence: tuple[Evidence, ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class QuestionResult:
    id: str
    pillar: str
    risk: Risk
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """A whole review: per question and per pillar, with what it looked at."""

    target: str
    created_at: float  # Unix seconds
    sources: dict[str, str]  # evidence source → what was read (or why nothing)
    questions: tuple[QuestionResult, ...]
    pillars: dict[str, Risk] = field(default_factory=dict)

    def findings(self) -> list[Finding]:
        return [finding for question in self.questions for finding in question.findings]


def worst(risks: list[Risk]) -> Risk:
    """The worst risk of `risks` (NOT_APPLICABLE when there are none)."""
    for risk in RISK_ORDER:
        if risk in risks:
            return risk
    return "NOT_APPLICABLE"
