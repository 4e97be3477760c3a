"""Checks over Kubernetes objects (rendered from a fleet spec, or any YAML given) and over the fleet spec.

Each function takes the review's inputs and returns an Outcome; none reads anything but its arguments.
A *serving* workload is one whose pods some Service selects (load-test pods and jobs are not).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelfleet.review.inputs import ManifestDoc, ReviewInputs
from modelfleet.review.types import Evidence, Outcome

_WORKLOAD_KINDS = {
    "Deployment": "/spec/template",
    "StatefulSet": "/spec/template",
    "DaemonSet": "/spec/template",
}
SECRET_KEY_NAME = re.compile(r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)", re.I)
SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}")
AUTH_ENV = re.compile(r"(API_?KEY|AUTH|TOKEN|KEYS_FILE)", re.I)


@dataclass(frozen=True, slots=True)
class Workload:
    doc: ManifestDoc
    template: str  # JSON pointer of the pod template ("" for a bare Pod)
    labels: dict[str, str]
    pod: dict[str, Any]  # the pod spec

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for index, container in enumerate(self.pod.get("containers") or []):
            yield f"{self.template}/spec/containers/{index}", container

    def ev(self, pointer: str, observed: str, expected: str) -> Evidence:
        return self.doc.evidence(pointer, observed, expected)


def get_path(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def workloads(docs: tuple[ManifestDoc, ...]) -> list[Workload]:
    found = []
    for doc in docs:
        if doc.kind in _WORKLOAD_KINDS:
            template = get_path(doc.obj, "spec", "template") or {}
            labels = get_path(template, "metadata", "labels") or {}
            found.append(Workload(doc, _WORKLOAD_KINDS[doc.kind], dict(labels), template.get("spec") or {}))
        elif doc.kind == "Pod":
            found.append(
                Workload(
                    doc, "", dict(get_path(doc.obj, "metadata", "labels") or {}), doc.obj.get("spec") or {}
                )
            )
    return found


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a plain (Service) or label selector (matchLabels) selects pods with `labels`."""
    if selector is None:
        return False
    wanted = (
        selector.get("matchLabels", selector)
        if "matchLabels" in selector or "matchExpressions" in selector
        else selector
    )
    return all(labels.get(key) == value for key, value in (wanted or {}).items())


def service_docs(docs: tuple[ManifestDoc, ...]) -> list[ManifestDoc]:
    return [doc for doc in docs if doc.kind == "Service" and get_path(doc.obj, "spec", "selector")]


def _serving(docs: tuple[ManifestDoc, ...]) -> list[Workload]:
    services = service_docs(docs)
    return [
        w
        for w in workloads(docs)
        if any(selects(get_path(s.obj, "spec", "selector"), w.labels) for s in services)
    ]


def _manifest_check(inputs: ReviewInputs) -> tuple[tuple[ManifestDoc, ...], list[Workload]] | None:
    if inputs.manifests is None:
        return None
    return inputs.manifests, _serving(inputs.manifests)


def unanswered(note: str) -> Outcome:
    return Outcome("unanswered", (), note)


NO_MANIFESTS = "no Kubernetes manifests (give a fleet spec or a manifests folder)"
NO_SERVING = "no serving workload found (no Service selects a Deployment, StatefulSet, DaemonSet or Pod)"


def for_serving(inputs: ReviewInputs) -> tuple[tuple[ManifestDoc, ...], list[Workload]] | Outcome:
    found = _manifest_check(inputs)
    if found is None:
        return unanswered(NO_MANIFESTS)
    if not found[1]:
        return unanswered(NO_SERVING)
    return found


def _hpa_min(docs: tuple[ManifestDoc, ...], workload: Workload) -> tuple[ManifestDoc, int] | None:
    for doc in docs:
        target = get_path(doc.obj, "spec", "scaleTargetRef") or {}
        if (
            doc.kind == "HorizontalPodAutoscaler"
            and target.get("kind") == workload.doc.kind
            and target.get("name") == workload.doc.name
        ):
            return doc, int(get_path(doc.obj, "spec", "minReplicas") or 1)
    return None


def replicas_two_or_more(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        if w.doc.kind == "DaemonSet":
            continue
        replicas = 1 if w.doc.kind == "Pod" else int(get_path(w.doc.obj, "spec", "replicas") or 1)
        hpa = _hpa_min(docs, w)
        floor = max(replicas, hpa[1]) if hpa else replicas
        ev = w.ev(
            "/spec/replicas",
            f"{replicas} replica(s)" + (f", HPA minReplicas {hpa[1]}" if hpa else ", no HPA"),
            ">= 2 replicas",
        )
        (passes if floor >= 2 else failures).append(ev)
    return Outcome.of(failures, passes)


def probes_present(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        for pointer, container in w.containers():
            missing = [p for p in ("readinessProbe", "livenessProbe") if p not in container]
            observed = f"container {container.get('name')}: " + (
                f"no {' and no '.join(missing)}" if missing else "readiness and liveness probes"
            )
            (failures if missing else passes).append(
                w.ev(pointer, observed, "readinessProbe and livenessProbe")
            )
    return Outcome.of(failures, passes)


def disruption_budget(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    budgets = [d for d in docs if d.kind == "PodDisruptionBudget"]
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        match = next((b for b in budgets if selects(get_path(b.obj, "spec", "selector"), w.labels)), None)
        if match is None:
            failures.append(
                w.ev(w.template or "/", "no PodDisruptionBudget selects these pods", "a PodDisruptionBudget")
            )
        else:
            passes.append(
                match.evidence(
                    "/spec/selector",
                    f"PodDisruptionBudget {match.name} selects {w.doc.name}",
                    "a PodDisruptionBudget",
                )
            )
    return Outcome.of(failures, passes)


def autoscaler_present(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        if w.component == "router" or w.doc.kind not in ("Deployment", "StatefulSet"):
            continue  # modelfleet's router is sized by kubernetes.router_replicas, not by an HPA
        hpa = _hpa_min(docs, w)
        if hpa is None:
            failures.append(
                w.ev("/spec/replicas", "no HorizontalPodAutoscaler targets it", "a HorizontalPodAutoscaler")
            )
        else:
            passes.append(
                hpa[0].evidence(
                    "/spec/scaleTargetRef",
                    f"HPA {hpa[0].name} scales {w.doc.name} (min {hpa[1]})",
                    "a HorizontalPodAutoscaler",
                )
            )
    return Outcome.of(failures, passes)


def zone_spread(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        spread = [c.get("topologyKey") for c in w.pod.get("topologySpreadConstraints") or []]
        anti = get_path(w.pod, "affinity", "podAntiAffinity")
        ok = bool(spread) or bool(anti)
        observed = (
            f"topologySpreadConstraints on {', '.join(map(str, spread))}"
            if spread
            else ("podAntiAffinity" if anti else "no topologySpreadConstraints, no podAntiAffinity")
        )
        (passes if ok else failures).append(
            w.ev(f"{w.template}/spec", observed, "spread over zones or nodes")
        )
    return Outcome.of(failures, passes)


def server_side_routing(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    routers = [w for w in serving if w.component == "router"]
    if routers:
        return Outcome(
            "pass",
            (
                routers[0].ev(
                    "/metadata/labels",
                    f"router {routers[0].doc.name} fronts the model servers",
                    "one endpoint that routes",
                ),
            ),
        )
    services = [
        s
        for s in service_docs(docs)
        if any(selects(get_path(s.obj, "spec", "selector"), w.labels) for w in serving)
    ]
    evidence = tuple(
        s.evidence(
            "/spec/selector",
            f"Service {s.name} fronts its own server",
            "one Service for every model (a router)",
        )
        for s in services
    )
    if len(services) > 1:
        note = f"{len(services)} Services each front their own copy of the models and no router balances them: clients pick server and model (client-side indexing)"
        return Outcome("fail", evidence, note)
    return Outcome("pass", evidence)


def spec_evidence(inputs: ReviewInputs, pointer: str, observed: str, expected: str) -> Evidence:
    return Evidence(
        f"{inputs.spec_path}#{pointer}", observed, expected, file=inputs.spec_path, pointer=pointer
    )


def alert_rules(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return unanswered(NO_MANIFESTS)
    kinds = {doc.kind: doc for doc in inputs.manifests}
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for kind in ("PrometheusRule", "ServiceMonitor"):
        doc = kinds.get(kind)
        if doc is None:
            failures.append(Evidence(f"manifests: kind {kind}", f"no {kind}", f"a {kind}"))
        else:
            passes.append(doc.evidence("/spec", f"{kind} {doc.name}", f"a {kind}"))
    return Outcome.of(failures, passes)


def versions_pinned(inputs: ReviewInputs) -> Outcome:
    if inputs.spec is None:
        return unanswered("no fleet spec")
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for index, model in enumerate(inputs.spec.models):
        if model.ref is None:
            failures.append(
                spec_evidence(
                    inputs,
                    f"/models/{index}/path",
                    f"{model.name}: served from path {model.path}",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
        elif ":" in model.ref or "@" in model.ref:
            passes.append(
                spec_evidence(
                    inputs,
                    f"/models/{index}/ref",
                    f"{model.name}: ref {model.ref}",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
        else:
            failures.append(
                spec_evidence(
                    inputs,
                    f"/models/{index}/ref",
                    f"{model.name}: ref {model.ref} (whatever is latest)",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
    return Outcome.of(failures, passes)
