"""A review written as JSON (versioned schema), SARIF 2.1.0 (results on the spec's lines) or self-contained HTML."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from modelfleet import __version__
from modelfleet.review.catalog import Catalog, load_catalog
from modelfleet.review.types import Evidence, ReviewResult

JSON_SCHEMA_VERSION = 1
JSON_KIND = "modelfleet.review.result"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"HIGH": "error", "MEDIUM": "warning", "UNANSWERED": "note"}


def to_json(result: ReviewResult) -> dict[str, Any]:
    return {
        "kind": JSON_KIND,
        "schema_version": JSON_SCHEMA_VERSION,
        "modelfleet_version": __version__,
        "target": result.target,
        "created_at": result.created_at,
        "sources": result.sources,
        "pillars": result.pillars,
        "questions": [
            {
                "id": q.id,
                "pillar": q.pillar,
                "risk": q.risk,
                "findings": [
                    {
                        "check": f.check,
                        "status": f.status,
                        "risk": f.risk,
                        "note": f.note,
                        "evidence": [asdict(e) for e in f.evidence],
                    }
                    for f in q.findings
                ],
            }
            for q in result.questions
        ],
    }


@cache
def _nodes(path: str) -> tuple[yaml.Node, ...]:
    try:
        return tuple(yaml.compose_all(Path(path).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError):
        return ()


def pointer_line(path: str, pointer: str, document: int = 0) -> int:
    """1-based line of the deepest node of `pointer` that exists in document `document` of a YAML file."""
    nodes = _nodes(path)
    if document >= len(nodes):
        return 1
    node = nodes[document]
    line = int(node.start_mark.line)
    for part in [p for p in pointer.split("/") if p]:
        if isinstance(node, yaml.MappingNode):
            pair = next(((key, value) for key, value in node.value if key.value == part), None)
            if pair is None:
                break
            line, node = int(pair[0].start_mark.line), pair[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = int(node.start_mark.line)
        else:
            break
    return line + 1


def _location(evidence: Evidence, spec_path: str | None, spec_pointer: str) -> dict[str, Any]:
    if evidence.file is not None and evidence.pointer is not None:
        document = (
            int(evidence.where.split("[", 1)[1].split("]", 1)[0])
            if "[" in evidence.where.split("#", 1)[0]
            else 0
        )
        uri, line = evidence.file, pointer_line(evidence.file, evidence.pointer, document)
    elif spec_path is not None:
        uri, line = spec_path, pointer_line(spec_path, spec_pointer)
    else:
        return {}
    return {"physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": line}}}


def to_sarif(result: ReviewResult, spec_path: str | None, catalog: Catalog | None = None) -> dict[str, Any]:
    """SARIF 2.1.0: one rule per check, one result per failed or unanswered finding at its evidence's line."""
    catalog = catalog or load_catalog()
    rules = [
        {
            "id": c.id,
            "name": c.id,
            "shortDescription": {"text": c.title},
            "fullDescription": {"text": catalog.question(c.question).title},
            "helpUri": c.doc,
            "help": {"text": c.remediation},
            "properties": {
                "question": c.question,
                "risk": c.risk,
                "best_practices": list(catalog.question(c.question).best_practices),
            },
        }
        for c in catalog.checks
    ]
    index = {c.id: i for i, c in enumerate(catalog.checks)}
    checks = {c.id: c for c in catalog.checks}
    results = []
    for finding in result.findings():
        if finding.risk not in _SARIF_LEVEL:
            continue
        check = checks[finding.check]
        evidence = finding.evidence or (Evidence("", finding.note, ""),)
        for item in evidence:
            text = f"{check.title}: {item.observed or finding.note}" + (
                f" (expected {item.expected}; at {item.where})" if item.expected else ""
            )
            entry: dict[str, Any] = {
                "ruleId": check.id,
                "ruleIndex": index[check.id],
                "level": _SARIF_LEVEL[finding.risk],
                "message": {"text": text},
                "properties": {"risk": finding.risk, "age_s": item.age_s},
            }
            location = _location(item, spec_path, check.spec_pointer)
            if location:
                entry["locations"] = [location]
            results.append(entry)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "modelfleet review",
                        "version": __version__,
                        "informationUri": "https://github.com/modelfleet/modelfleet",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;width:100%}"
    "td,th{border:1px solid #ccc;padding:.3em;vertical-align:top;text-align:left}.HIGH{background:#f8d0d0}"
    ".MEDIUM{background:#fde9c0}.NONE{background:#d8f0d8}.UNANSWERED{background:#e4e4e4}.NOT_APPLICABLE{background:#f4f4f4}"
)
_SCORE = {"HIGH": 0.0, "MEDIUM": 0.5, "NONE": 1.0}


def score(questions: list[dict[str, Any]]) -> float | None:
    """Share of answered questions without risk (HIGH 0, MEDIUM ½, NONE 1); None when nothing is answered."""
    answered = [_SCORE[q["risk"]] for q in questions if q["risk"] in _SCORE]
    return round(100 * sum(answered) / len(answered), 1) if answered else None


def to_html(result: ReviewResult, earlier: list[dict[str, Any]], catalog: Catalog | None = None) -> str:
    """One offline page: pillars, questions, findings with evidence and remediation; score over earlier reviews."""
    catalog = catalog or load_catalog()
    e = html.escape
    document = to_json(result)
    history = [*earlier, document]
    rows = "".join(
        f"<tr><td>{e(str(h.get('target')))}</td><td>{h.get('created_at'):.0f}</td><td>{score(h['questions'])}</td></tr>"
        for h in history
    )
    pillars = "".join(f"<tr><td>{e(p)}</td><td class='{r}'>{r}</td></tr>" for p, r in result.pillars.items())
    sections = []
    for question in result.questions:
        title = catalog.question(question.id).title
        findings = []
        for finding in question.findings:
            check = next(c for c in catalog.checks if c.id == finding.check)
            evidence = "<br>".join(
                e(
                    f"{ev.where}: observed {ev.observed}; expected {ev.expected}"
                    + (f"; {ev.age_s:.0f} s old" if ev.age_s is not None else "")
                )
                for ev in finding.evidence
            ) or e(finding.note)
            findings.append(
                f"<tr><td>{e(check.id)}</td><td class='{finding.risk}'>{finding.risk}</td><td>{evidence}</td>"
                f"<td>{e(check.remediation)} <a href='{e(check.doc)}'>doc</a></td></tr>"
            )
        sections.append(
            f"<h3 class='{question.risk}'>{e(title)} — {question.risk}</h3><table><tr><th>check</th><th>risk</th>"
            f"<th>evidence</th><th>remediation</th></tr>{''.join(findings)}</table>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>modelfleet review: {e(result.target)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>modelfleet review: {e(result.target)}</h1>"
        f"<h2>Score over time</h2><table><tr><th>target</th><th>created (Unix s)</th><th>score (%)</th></tr>{rows}</table>"
        f"<h2>Pillars</h2><table>{pillars}</table><h2>Questions</h2>{''.join(sections)}"
        f"<script type='application/json' id='review'>{e(json.dumps(document))}</script></body></html>"
    )
