"""Checks over what the live probes saw (pure functions of the recorded probes)."""

from __future__ import annotations

from modelfleet.review.inputs import LiveEvidence, Probe, ReviewInputs
from modelfleet.review.types import Evidence, Outcome

NO_LIVE = "needs --live (probes a running fleet)"


def _probe(inputs: ReviewInputs, name: str) -> tuple[LiveEvidence, Probe] | Outcome:
    if inputs.live is None:
        return Outcome("unanswered", (), NO_LIVE)
    probe = next((p for p in inputs.live.probes if p.name == name), None)
    if probe is None:
        return Outcome("unanswered", (), f"the {name} probe did not run")
    return inputs.live, probe


def _ev(probe: Probe, expected: str) -> Evidence:
    answer = f"HTTP {probe.status}" if probe.status else "no answer"
    return Evidence(f"POST {probe.url}", f"{answer} {probe.body[:120]}".strip(), expected, age_s=0.0)


def live_unauthenticated_refused(inputs: ReviewInputs) -> Outcome:
    found = _probe(inputs, "unauthenticated")
    if isinstance(found, Outcome):
        return found
    probe = found[1]
    return Outcome("pass" if probe.status == 401 else "fail", (_ev(probe, "HTTP 401"),))


def live_out_of_scope_refused(inputs: ReviewInputs) -> Outcome:
    found = _probe(inputs, "out_of_scope")
    if isinstance(found, Outcome):
        return Outcome(
            "unanswered", (), found.note + "; give --probe-key with a key lacking the model's infer scope"
        )
    probe = found[1]
    return Outcome("pass" if probe.status == 403 else "fail", (_ev(probe, "HTTP 403"),))


def live_malformed_refused(inputs: ReviewInputs) -> Outcome:
    found = _probe(inputs, "malformed")
    if isinstance(found, Outcome):
        return found
    live, probe = found
    if live.auth_enabled and probe.status in (401, 403):
        return Outcome(
            "unanswered",
            (_ev(probe, 'HTTP 4xx with {"error": ...} from the model'),),
            "the malformed probe was refused for its key before its body was read; give --api-key with "
            "the model's infer scope",
        )
    ok = 400 <= probe.status < 500 and '"error"' in probe.body
    return Outcome("pass" if ok else "fail", (_ev(probe, 'HTTP 4xx with {"error": ...}'),))


def live_tls_offered(inputs: ReviewInputs) -> Outcome:
    if inputs.live is None:
        return Outcome("unanswered", (), NO_LIVE)
    url = inputs.live.router_url
    ev = Evidence(url, f"router URL scheme {url.split(':', 1)[0]}", "https", age_s=0.0)
    return Outcome("pass" if url.startswith("https://") else "fail", (ev,))


def live_served_matches_registry(inputs: ReviewInputs) -> Outcome:
    live = inputs.live
    if live is None:
        return Outcome("unanswered", (), NO_LIVE)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    refused = [p for p in live.probes if p.name == "metadata" and p.status in (401, 403)]
    for model, (expected, source) in sorted(live.expected_sha256.items()):
        served = live.served_sha256.get(model)
        denied = next((p for p in refused if p.model == model), None)
        if served is None and denied is not None:
            return Outcome(
                "unanswered",
                (Evidence(f"GET {denied.url}", f"HTTP {denied.status}", "HTTP 200 with parameters.sha256"),),
                "the model's metadata needs a key: give --api-key with the read scope",
            )
        ev = Evidence(
            f"GET {live.router_url}/v2/models/{model} parameters.sha256",
            f"served {served[:16] if served else 'nothing'}…",
            f"{expected[:16]}… ({source})",
            age_s=0.0,
        )
        (passes if served == expected else failures).append(ev)
    return Outcome.of(failures, passes)
