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
_SECRET_KEY_NAME = re.compile(r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)", re.I)
_SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}")
_AUTH_ENV = re.compile(r"(API_?KEY|AUTH|TOKEN|KEYS_FILE)", re.I)


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
        return Evidence(
            where=self.doc.where(pointer),
            observed=observed,
            expected=expected,
            file=self.doc.file,
            pointer=pointer,
        )


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _workloads(docs: tuple[ManifestDoc, ...]) -> list[Workload]:
    found = []
    for doc in docs:
        if doc.kind in _WORKLOAD_KINDS:
            template = _get(doc.obj, "spec", "template") or {}
            labels = _get(template, "metadata", "labels") or {}
            found.append(Workload(doc, _WORKLOAD_KINDS[doc.kind], dict(labels), template.get("spec") or {}))
        elif doc.kind == "Pod":
            found.append(
                Workload(doc, "", dict(_get(doc.obj, "metadata", "labels") or {}), doc.obj.get("spec") or {})
            )
    return found


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a plain (Service) or label selector (matchLabels) selects pods with `labels`."""
    if selector is None:
        return False
    wanted = (
        selector.get("matchLabels", selector)
        if "matchLabels" in selector or "matchExpressions" in selector
        else selector
    )
    return all(labels.get(key) == value for key, value in (wanted or {}).items())


def _services(docs: tuple[ManifestDoc, ...]) -> list[ManifestDoc]:
    return [doc for doc in docs if doc.kind == "Service" and _get(doc.obj, "spec", "selector")]


def _serving(docs: tuple[ManifestDoc, ...]) -> list[Workload]:
    services = _services(docs)
    return [
        w
        for w in _workloads(docs)
        if any(_selects(_get(s.obj, "spec", "selector"), w.labels) for s in services)
    ]


def _manifest_check(inputs: ReviewInputs) -> tuple[tuple[ManifestDoc, ...], list[Workload]] | None:
    if inputs.manifests is None:
        return None
    return inputs.manifests, _serving(inputs.manifests)


def _unanswered(note: str) -> Outcome:
    return Outcome("unanswered", (), note)


NO_MANIFESTS = "no Kubernetes manifests (give a fleet spec or a manifests folder)"
NO_SERVING = "no serving workload found (no Service selects a Deployment, StatefulSet, DaemonSet or Pod)"


def _for_serving(inputs: ReviewInputs) -> tuple[tuple[ManifestDoc, ...], list[Workload]] | Outcome:
    found = _manifest_check(inputs)
    if found is None:
        return _unanswered(NO_MANIFESTS)
    if not found[1]:
        return _unanswered(NO_SERVING)
    return found


def _hpa_min(docs: tuple[ManifestDoc, ...], workload: Workload) -> tuple[ManifestDoc, int] | None:
    for doc in docs:
        target = _get(doc.obj, "spec", "scaleTargetRef") or {}
        if (
            doc.kind == "HorizontalPodAutoscaler"
            and target.get("kind") == workload.doc.kind
            and target.get("name") == workload.doc.name
        ):
            return doc, int(_get(doc.obj, "spec", "minReplicas") or 1)
    return None


def replicas_two_or_more(inputs: ReviewInputs) -> Outcome:
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        if w.doc.kind == "DaemonSet":
            continue
        replicas = 1 if w.doc.kind == "Pod" else int(_get(w.doc.obj, "spec", "replicas") or 1)
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
    found = _for_serving(inputs)
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
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    budgets = [d for d in docs if d.kind == "PodDisruptionBudget"]
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        match = next((b for b in budgets if _selects(_get(b.obj, "spec", "selector"), w.labels)), None)
        if match is None:
            failures.append(
                w.ev(w.template or "/", "no PodDisruptionBudget selects these pods", "a PodDisruptionBudget")
            )
        else:
            passes.append(
                Evidence(
                    match.where("/spec/selector"),
                    f"PodDisruptionBudget {match.name} selects {w.doc.name}",
                    "a PodDisruptionBudget",
                    file=match.file,
                    pointer="/spec/selector",
                )
            )
    return Outcome.of(failures, passes)


def autoscaler_present(inputs: ReviewInputs) -> Outcome:
    found = _for_serving(inputs)
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
                Evidence(
                    hpa[0].where("/spec/scaleTargetRef"),
                    f"HPA {hpa[0].name} scales {w.doc.name} (min {hpa[1]})",
                    "a HorizontalPodAutoscaler",
                    file=hpa[0].file,
                    pointer="/spec/scaleTargetRef",
                )
            )
    return Outcome.of(failures, passes)


def zone_spread(inputs: ReviewInputs) -> Outcome:
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        spread = [c.get("topologyKey") for c in w.pod.get("topologySpreadConstraints") or []]
        anti = _get(w.pod, "affinity", "podAntiAffinity")
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
    found = _for_serving(inputs)
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
        for s in _services(docs)
        if any(_selects(_get(s.obj, "spec", "selector"), w.labels) for w in serving)
    ]
    evidence = tuple(
        Evidence(
            s.where("/spec/selector"),
            f"Service {s.name} fronts its own server",
            "one Service for every model (a router)",
            file=s.file,
            pointer="/spec/selector",
        )
        for s in services
    )
    if len(services) > 1:
        note = f"{len(services)} Services each front their own copy of the models and no router balances them: clients pick server and model (client-side indexing)"
        return Outcome("fail", evidence, note)
    return Outcome("pass", evidence)


def _spec_evidence(inputs: ReviewInputs, pointer: str, observed: str, expected: str) -> Evidence:
    return Evidence(
        f"{inputs.spec_path}#{pointer}", observed, expected, file=inputs.spec_path, pointer=pointer
    )


def auth_enabled(inputs: ReviewInputs) -> Outcome:
    if inputs.spec is not None:
        on = inputs.spec.auth.enabled
        ev = _spec_evidence(inputs, "/auth/enabled", f"auth.enabled {str(on).lower()}", "auth.enabled true")
        return Outcome("pass" if on else "fail", (ev,))
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        secrets = [v.get("name") for v in w.pod.get("volumes") or [] if "secret" in v]
        for pointer, container in w.containers():
            env = [
                e.get("name", "") for e in container.get("env") or [] if _AUTH_ENV.search(e.get("name", ""))
            ]
            mounted = [m.get("name") for m in container.get("volumeMounts") or [] if m.get("name") in secrets]
            if env or mounted:
                passes.append(
                    w.ev(
                        pointer,
                        f"container {container.get('name')}: credentials from {', '.join(env + mounted)}",
                        "an API-key store or auth setting",
                    )
                )
            else:
                failures.append(
                    w.ev(
                        pointer,
                        f"container {container.get('name')}: no key store mounted from a Secret, no auth setting in its env",
                        "an API-key store or auth setting",
                    )
                )
    return Outcome.of(failures, passes)


def network_policy(inputs: ReviewInputs) -> Outcome:
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        match = [p for p in policies if _selects(_get(p.obj, "spec", "podSelector") or {}, w.labels)]
        if match:
            passes.append(
                Evidence(
                    match[0].where("/spec/podSelector"),
                    f"NetworkPolicies {', '.join(p.name for p in match)} select {w.doc.name}",
                    "a NetworkPolicy",
                    file=match[0].file,
                    pointer="/spec/podSelector",
                )
            )
        else:
            failures.append(
                w.ev(
                    f"{w.template}/metadata/labels",
                    f"no NetworkPolicy selects {w.doc.kind} {w.doc.name}: every pod in the cluster can call it",
                    "a NetworkPolicy",
                )
            )
    return Outcome.of(failures, passes)


def secrets_not_in_configmaps(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return _unanswered(NO_MANIFESTS)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for doc in inputs.manifests:
        if doc.kind != "ConfigMap":
            continue
        for key, value in (doc.obj.get("data") or {}).items():
            text = str(value)
            if (_SECRET_KEY_NAME.search(key) and text.strip()) or _SECRET_VALUE.search(text):
                pointer = f"/data/{key}"
                failures.append(
                    Evidence(
                        doc.where(pointer),
                        f"ConfigMap {doc.name} key {key} holds a credential",
                        "credentials in Secrets",
                        file=doc.file,
                        pointer=pointer,
                    )
                )
        passes.append(
            Evidence(
                doc.where("/data"),
                f"ConfigMap {doc.name}: no credential",
                "credentials in Secrets",
                file=doc.file,
                pointer="/data",
            )
        )
    if not failures and not passes:
        return Outcome("not_applicable", (), "no ConfigMap")
    return Outcome.of(failures, passes)


def _security(w: Workload, container: dict[str, Any], key: str) -> Any:
    """A container's securityContext setting, falling back to the pod's (as Kubernetes does)."""
    own = _get(container, "securityContext", key)
    return own if own is not None else _get(w.pod, "securityContext", key)


def _per_container(inputs: ReviewInputs, judge: Any, expected: str) -> Outcome:
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        for pointer, container in w.containers():
            ok, observed = judge(w, container)
            ev = w.ev(
                f"{pointer}/securityContext", f"container {container.get('name')}: {observed}", expected
            )
            (passes if ok else failures).append(ev)
    return Outcome.of(failures, passes)


def non_root(inputs: ReviewInputs) -> Outcome:
    def judge(w: Workload, c: dict[str, Any]) -> tuple[bool, str]:
        as_non_root, user = _security(w, c, "runAsNonRoot"), _security(w, c, "runAsUser")
        if user == 0:
            return False, "runAsUser 0 (root)"
        if as_non_root is True or (isinstance(user, int) and user > 0):
            return True, f"runAsNonRoot {as_non_root}, runAsUser {user}"
        return (
            False,
            "runAsNonRoot and runAsUser unset: runs as the image's user (root unless the image says otherwise)",
        )

    return _per_container(inputs, judge, "runAsNonRoot true or runAsUser > 0")


def no_privilege_escalation(inputs: ReviewInputs) -> Outcome:
    def judge(w: Workload, c: dict[str, Any]) -> tuple[bool, str]:
        escalation, privileged = (
            _get(c, "securityContext", "allowPrivilegeEscalation"),
            _get(c, "securityContext", "privileged"),
        )
        if privileged is True:
            return False, "privileged true"
        if escalation is not False:
            return (
                False,
                f"allowPrivilegeEscalation {'unset (allowed)' if escalation is None else escalation}",
            )
        return True, "allowPrivilegeEscalation false, not privileged"

    return _per_container(inputs, judge, "allowPrivilegeEscalation false, privileged false")


def capabilities_dropped(inputs: ReviewInputs) -> Outcome:
    def judge(w: Workload, c: dict[str, Any]) -> tuple[bool, str]:
        drop = [str(x).upper() for x in _get(c, "securityContext", "capabilities", "drop") or []]
        read_only = _get(c, "securityContext", "readOnlyRootFilesystem") is True
        return (
            "ALL" in drop and read_only,
            f"capabilities drop {drop or 'none'}, readOnlyRootFilesystem {read_only}",
        )

    return _per_container(inputs, judge, "capabilities drop [ALL], readOnlyRootFilesystem true")


def no_service_account_token(inputs: ReviewInputs) -> Outcome:
    found = _for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    accounts = {d.name: d.obj.get("automountServiceAccountToken") for d in docs if d.kind == "ServiceAccount"}
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        own = w.pod.get("automountServiceAccountToken")
        effective = own if own is not None else accounts.get(w.pod.get("serviceAccountName", "default"))
        ev = w.ev(
            f"{w.template}/spec/automountServiceAccountToken",
            f"automountServiceAccountToken {'unset (mounted)' if effective is None else effective}",
            "false",
        )
        (passes if effective is False else failures).append(ev)
    return Outcome.of(failures, passes)


def tls_enabled(inputs: ReviewInputs) -> Outcome:
    if inputs.spec is not None:
        router = inputs.spec.router
        on = router.tls_secret_name is not None or router.tls_cert_file is not None
        observed = f"tls_secret_name {router.tls_secret_name}, tls_cert_file {router.tls_cert_file}"
        return Outcome(
            "pass" if on else "fail", (_spec_evidence(inputs, "/router", observed, "router TLS on"),)
        )
    if inputs.manifests is None:
        return _unanswered(NO_MANIFESTS)
    for doc in inputs.manifests:
        if doc.kind == "Ingress" and _get(doc.obj, "spec", "tls"):
            return Outcome(
                "pass",
                (
                    Evidence(
                        doc.where("/spec/tls"),
                        f"Ingress {doc.name} terminates TLS",
                        "TLS",
                        file=doc.file,
                        pointer="/spec/tls",
                    ),
                ),
            )
        for index, port in enumerate(_get(doc.obj, "spec", "ports") or []):
            if doc.kind == "Service" and (port.get("port") == 443 or "https" in str(port.get("name", ""))):
                pointer = f"/spec/ports/{index}"
                return Outcome(
                    "pass",
                    (
                        Evidence(
                            doc.where(pointer),
                            f"Service {doc.name} serves port {port.get('port')} ({port.get('name')})",
                            "TLS",
                            file=doc.file,
                            pointer=pointer,
                        ),
                    ),
                )
    services = _services(inputs.manifests)
    return Outcome.of(
        [
            Evidence(
                s.where("/spec/ports"),
                f"Service {s.name}: no HTTPS port, no Ingress with tls",
                "TLS",
                file=s.file,
                pointer="/spec/ports",
            )
            for s in services
        ],
        [],
    )


def _images(inputs: ReviewInputs) -> Iterator[tuple[Workload, str, str]]:
    for w in _workloads(inputs.manifests or ()):
        for pointer, container in w.containers():
            yield w, f"{pointer}/image", str(container.get("image", ""))


def image_not_latest(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return _unanswered(NO_MANIFESTS)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w, pointer, image in _images(inputs):
        name = image.split("@")[0].rsplit("/", 1)[-1]
        tag = name.split(":", 1)[1] if ":" in name else ""
        ok = "@sha256:" in image or (tag not in ("", "latest"))
        (passes if ok else failures).append(
            w.ev(pointer, f"image {image}", "a release tag or digest, not latest")
        )
    return Outcome.of(failures, passes)


def image_digest_pinned(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return _unanswered(NO_MANIFESTS)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w, pointer, image in _images(inputs):
        (passes if "@sha256:" in image else failures).append(
            w.ev(pointer, f"image {image}", "image@sha256:...")
        )
    return Outcome.of(failures, passes)


def alert_rules(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return _unanswered(NO_MANIFESTS)
    kinds = {doc.kind: doc for doc in inputs.manifests}
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for kind in ("PrometheusRule", "ServiceMonitor"):
        doc = kinds.get(kind)
        if doc is None:
            failures.append(Evidence(f"manifests: kind {kind}", f"no {kind}", f"a {kind}"))
        else:
            passes.append(
                Evidence(
                    doc.where("/spec"), f"{kind} {doc.name}", f"a {kind}", file=doc.file, pointer="/spec"
                )
            )
    return Outcome.of(failures, passes)


def versions_pinned(inputs: ReviewInputs) -> Outcome:
    if inputs.spec is None:
        return _unanswered("no fleet spec")
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for index, model in enumerate(inputs.spec.models):
        if model.ref is None:
            failures.append(
                _spec_evidence(
                    inputs,
                    f"/models/{index}/path",
                    f"{model.name}: served from path {model.path}",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
        elif ":" in model.ref or "@" in model.ref:
            passes.append(
                _spec_evidence(
                    inputs,
                    f"/models/{index}/ref",
                    f"{model.name}: ref {model.ref}",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
        else:
            failures.append(
                _spec_evidence(
                    inputs,
                    f"/models/{index}/ref",
                    f"{model.name}: ref {model.ref} (whatever is latest)",
                    "ref NAME:VERSION or NAME@ALIAS",
                )
            )
    return Outcome.of(failures, passes)
