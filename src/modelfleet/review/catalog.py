"""The check catalog: questions and checks read from checks.yaml, validated, and the docs table built from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

import yaml

from modelfleet.review.types import Source

_ID = re.compile(r"^[a-z][a-z0-9_]{2,63}$")  # also valid custom-lens ids: 3-128 chars, no hyphen
_BEST_PRACTICE = re.compile(r"^[A-Z]{3,8}\d{2}-BP\d{2}$")
_SOURCES = {"spec", "manifests", "registry", "results", "live", "drill"}


@dataclass(frozen=True, slots=True)
class Pillar:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    pillar: str
    title: str
    best_practices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    question: str
    sources: tuple[Source, ...]
    risk: str  # HIGH or MEDIUM: what a failure costs
    title: str
    remediation: str
    spec_pointer: str  # where in a fleet spec the remediation applies (SARIF points there)
    doc: str


@dataclass(frozen=True, slots=True)
class Catalog:
    pillars: tuple[Pillar, ...]
    questions: tuple[Question, ...]
    checks: tuple[Check, ...]

    def question(self, question_id: str) -> Question:
        return next(q for q in self.questions if q.id == question_id)

    def checks_of(self, question_id: str) -> list[Check]:
        return [check for check in self.checks if check.question == question_id]


def parse_catalog(data: dict[str, Any]) -> Catalog:
    """Build and validate a catalog from its YAML document; a mistake names the entry."""
    pillars = tuple(Pillar(id=p["id"], name=p["name"]) for p in data["pillars"])
    pillar_ids = {p.id for p in pillars}
    questions = tuple(
        Question(id=q["id"], pillar=q["pillar"], title=q["title"], best_practices=tuple(q["best_practices"]))
        for q in data["questions"]
    )
    question_ids = {q.id for q in questions}
    checks = tuple(
        Check(
            id=c["id"],
            question=c["question"],
            sources=tuple(c["source"]),
            risk=c["risk"],
            title=c["title"],
            remediation=c["remediation"],
            spec_pointer=c["spec_pointer"],
            doc=c["doc"],
        )
        for c in data["checks"]
    )
    ids = [p.id for p in pillars] + [q.id for q in questions] + [c.id for c in checks]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"checks.yaml: ids must be unique, repeated: {', '.join(repeated)}")
    for entry_id in ids:
        if not _ID.match(entry_id):
            raise ValueError(f"checks.yaml: id {entry_id!r} must be 3-64 of a-z, 0-9, _ (a custom-lens id)")
    for question in questions:
        if question.pillar not in pillar_ids:
            raise ValueError(f"checks.yaml: question {question.id} names unknown pillar {question.pillar}")
        bad = [bp for bp in question.best_practices if not _BEST_PRACTICE.match(bp)]
        if bad:
            raise ValueError(
                f"checks.yaml: question {question.id}: best-practice ids {bad} are not like REL11-BP03"
            )
    for check in checks:
        if check.question not in question_ids:
            raise ValueError(f"checks.yaml: check {check.id} names unknown question {check.question}")
        if check.risk not in ("HIGH", "MEDIUM"):
            raise ValueError(f"checks.yaml: check {check.id}: risk must be HIGH or MEDIUM")
        if not set(check.sources) <= _SOURCES or not check.sources:
            raise ValueError(f"checks.yaml: check {check.id}: source must be among {sorted(_SOURCES)}")
    empty = [q.id for q in questions if not any(c.question == q.id for c in checks)]
    if empty:
        raise ValueError(f"checks.yaml: questions without checks: {', '.join(empty)}")
    return Catalog(pillars, questions, checks)


@cache
def load_catalog() -> Catalog:
    text = resources.files("modelfleet.review").joinpath("checks.yaml").read_text(encoding="utf-8")
    return parse_catalog(cast(dict[str, Any], yaml.safe_load(text)))


def docs_table(catalog: Catalog) -> str:
    """The Markdown table of checks docs/review.md carries (a test asserts the two are equal)."""
    lines = [
        "| Check | Question | Pillar | Best practices | Evidence | Risk when failed | Remediation |",
        "|---|---|---|---|---|---|---|",
    ]
    for check in catalog.checks:
        question = catalog.question(check.question)
        remediation = check.remediation.replace("|", "\\|")
        lines.append(
            f"| [`{check.id}`]({check.doc}) | {question.title} | {question.pillar} | "
            f"{', '.join(question.best_practices)} | {', '.join(check.sources)} | {check.risk} | {remediation} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # regenerate the docs table: python -m modelfleet.review.catalog
    print(docs_table(load_catalog()), end="")
