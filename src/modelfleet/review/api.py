"""The library call behind `modelfleet review`: gather evidence, judge, write the chosen output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelfleet.errors import Forbidden, InvalidInput
from modelfleet.review import collect, lens, outputs
from modelfleet.review.engine import exit_code, run_review
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import ReviewResult


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    result: ReviewResult
    text: str
    lens: dict[str, Any]
    answers: dict[str, Any]
    exit_code: int


def gather(
    target: str,
    *,
    live: bool = False,
    drill: bool = False,
    force: bool = False,
    results_dir: Path | None = None,
    registry_root: Path | None = None,
    api_key: str | None = None,
    probe_key: str | None = None,
    state_root: Path | None = None,
    now: float | None = None,
) -> tuple[ReviewInputs, dict[str, str], str | None]:
    """The review's inputs from every source asked for, what each source was, and the spec path (for SARIF)."""
    from modelfleet.config.review import ReviewConfig

    now = collect.now_s() if now is None else now
    found = collect.resolve_target(target, state_root)
    if (live or drill) and (found.spec is None or found.fleet_root is None):
        # Before rendering or reading anything else: the one-line answer comes at once.
        raise InvalidInput(
            f"--live needs a running local fleet: {found.label} has no local state (start it with `modelfleet fleet up SPEC`)"
        )
    sources: dict[str, str] = {}
    config = found.spec.review if found.spec is not None else ReviewConfig()
    if found.spec is not None:
        manifests = collect.rendered_manifests(found.spec)
        sources["spec"] = str(found.spec_path)
        sources["manifests"] = f"rendered from {found.spec_path} ({len(manifests)} objects)"
    else:
        assert found.manifests_path is not None
        manifests = collect.read_manifests(found.manifests_path)
        sources["manifests"] = f"{found.manifests_path} ({len(manifests)} objects)"
    registry = collect.read_registry(registry_root, found.spec, now) if registry_root is not None else None
    if registry is not None:
        sources["registry"] = str(registry_root)
    saved = collect.read_results_dir(results_dir, now) if results_dir is not None else None
    if saved is not None:
        sources["results"] = str(results_dir)
    drift = collect.read_drift(found.fleet_root, now)
    live_evidence = drill_evidence = None
    if live or drill:
        live_evidence, drill_evidence = _behaviour(found, drill, force, api_key, probe_key, registry)
        sources["live"] = live_evidence.router_url
    inputs = ReviewInputs(
        now=now,
        config=config,
        spec=found.spec,
        spec_path=None if found.spec_path is None else str(found.spec_path),
        manifests=manifests,
        registry=registry,
        bench=saved.bench if saved else None,
        tune=saved.tune if saved else None,
        chaos=saved.chaos if saved else None,
        drift=drift,
        live=live_evidence,
        drill=drill_evidence,
    )
    return inputs, sources, inputs.spec_path


def _behaviour(
    found: collect.Target, drill: bool, force: bool, api_key: str | None, probe_key: str | None, registry: Any
) -> tuple[Any, Any]:
    from modelfleet.fleet.state import FleetPaths, read_state
    from modelfleet.review import probes

    assert found.spec is not None and found.fleet_root is not None  # gather checked
    spec = found.spec
    if drill and spec.review.protected and not force:
        raise Forbidden(
            f"fleet {spec.name} is protected (review.protected true): drills refused; add --force to run them anyway"
        )
    state = read_state(FleetPaths(found.fleet_root))
    timeout = spec.review.probe_timeout_s
    models = [m.name for m in spec.models]
    live = probes.run_probes(
        state.router_url, models, spec.auth.enabled, probe_key, api_key, found.fleet_root, registry, timeout
    )
    drills = (
        probes.run_drills(
            state.router_url,
            models[0],
            found.fleet_root,
            api_key,
            spec.review.overload_burst_requests,
            spec.review.overload_concurrency,
            spec.review.heal_within_s,
            timeout,
        )
        if drill
        else None
    )
    return live, drills


def text_report(result: ReviewResult) -> str:
    lines = [f"review of {result.target}"]
    for pillar, risk in result.pillars.items():
        lines.append(f"  pillar {pillar}: {risk}")
    for question in result.questions:
        lines.append(f"{question.risk:<14} {question.id}")
        for finding in question.findings:
            if finding.risk == "NONE":
                continue
            first = finding.evidence[0] if finding.evidence else None
            detail = (
                f"{first.observed} (expected {first.expected}) at {first.where}" if first else finding.note
            )
            lines.append(f"    {finding.risk:<14} {finding.check}: {detail}")
    return "\n".join(lines) + "\n"


def review(
    target: str,
    *,
    live: bool = False,
    drill: bool = False,
    force: bool = False,
    results_dir: Path | None = None,
    registry_root: Path | None = None,
    api_key: str | None = None,
    probe_key: str | None = None,
    state_root: Path | None = None,
    earlier: list[Path] | None = None,
    fmt: Literal["text", "json", "sarif", "html"] = "text",
    fail_on: str = "high",
) -> ReviewOutcome:
    inputs, sources, spec_path = gather(
        target,
        live=live,
        drill=drill,
        force=force,
        results_dir=results_dir,
        registry_root=registry_root,
        api_key=api_key,
        probe_key=probe_key,
        state_root=state_root,
    )
    result = run_review(inputs, target, sources)
    if fmt == "json":
        text = json.dumps(outputs.to_json(result), indent=1) + "\n"
    elif fmt == "sarif":
        text = json.dumps(outputs.to_sarif(result, spec_path), indent=1) + "\n"
    elif fmt == "html":
        previous = []
        for path in earlier or []:
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise InvalidInput(
                    f"{path}: not a JSON review (write one with `modelfleet review --format json`)"
                ) from None
            if not isinstance(document, dict) or document.get("kind") != outputs.JSON_KIND:
                raise InvalidInput(f"{path}: not a JSON review (kind {outputs.JSON_KIND!r} expected)")
            previous.append(document)
        text = outputs.to_html(result, previous)
    else:
        text = text_report(result)
    return ReviewOutcome(
        result, text, lens.build_lens(), lens.build_answers(result), exit_code(result, fail_on)
    )
