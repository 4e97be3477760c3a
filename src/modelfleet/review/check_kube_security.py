"""Security checks over Kubernetes objects and the fleet spec: auth, network policy, secrets, pod security, TLS, images.

Split from check_kube (which holds the workload model and the reliability checks) to keep each module one job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelfleet.review.check_kube import (
    AUTH_ENV,
    NO_MANIFESTS,
    SECRET_KEY_NAME,
    SECRET_VALUE,
    Workload,
    for_serving,
    get_path,
    selects,
    service_docs,
    spec_evidence,
    unanswered,
    workloads,
)
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import Evidence, Outcome


def auth_enabled(inputs: ReviewInputs) -> Outcome:
    if inputs.spec is not None:
        on = inputs.spec.auth.enabled
        ev = spec_evidence(inputs, "/auth/enabled", f"auth.enabled {str(on).lower()}", "auth.enabled true")
        return Outcome("pass" if on else "fail", (ev,))
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in found[1]:
        secrets = [v.get("name") for v in w.pod.get("volumes") or [] if "secret" in v]
        for pointer, container in w.containers():
            env = [
                e.get("name", "") for e in container.get("env") or [] if AUTH_ENV.search(e.get("name", ""))
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
    found = for_serving(inputs)
    if isinstance(found, Outcome):
        return found
    docs, serving = found
    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w in serving:
        match = [p for p in policies if selects(get_path(p.obj, "spec", "podSelector") or {}, w.labels)]
        if match:
            passes.append(
                match[0].evidence(
                    "/spec/podSelector",
                    f"NetworkPolicies {', '.join(p.name for p in match)} select {w.doc.name}",
                    "a NetworkPolicy",
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
        return unanswered(NO_MANIFESTS)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for doc in inputs.manifests:
        if doc.kind != "ConfigMap":
            continue
        for key, value in (doc.obj.get("data") or {}).items():
            text = str(value)
            if (SECRET_KEY_NAME.search(key) and text.strip()) or SECRET_VALUE.search(text):
                pointer = f"/data/{key}"
                failures.append(
                    doc.evidence(
                        pointer,
                        f"ConfigMap {doc.name} key {key} holds a credential",
                        "credentials in Secrets",
                    )
                )
        passes.append(doc.evidence("/data", f"ConfigMap {doc.name}: no credential", "credentials in Secrets"))
    if not failures and not passes:
        return Outcome("not_applicable", (), "no ConfigMap")
    return Outcome.of(failures, passes)


def _security(w: Workload, container: dict[str, Any], key: str) -> Any:
    """A container's securityContext setting, falling back to the pod's (as Kubernetes does)."""
    own = get_path(container, "securityContext", key)
    return own if own is not None else get_path(w.pod, "securityContext", key)


def _per_container(inputs: ReviewInputs, judge: Any, expected: str) -> Outcome:
    found = for_serving(inputs)
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
            get_path(c, "securityContext", "allowPrivilegeEscalation"),
            get_path(c, "securityContext", "privileged"),
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
        drop = [str(x).upper() for x in get_path(c, "securityContext", "capabilities", "drop") or []]
        read_only = get_path(c, "securityContext", "readOnlyRootFilesystem") is True
        return (
            "ALL" in drop and read_only,
            f"capabilities drop {drop or 'none'}, readOnlyRootFilesystem {read_only}",
        )

    return _per_container(inputs, judge, "capabilities drop [ALL], readOnlyRootFilesystem true")


def no_service_account_token(inputs: ReviewInputs) -> Outcome:
    found = for_serving(inputs)
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
            "pass" if on else "fail", (spec_evidence(inputs, "/router", observed, "router TLS on"),)
        )
    if inputs.manifests is None:
        return unanswered(NO_MANIFESTS)
    for doc in inputs.manifests:
        if doc.kind == "Ingress" and get_path(doc.obj, "spec", "tls"):
            return Outcome(
                "pass",
                (doc.evidence("/spec/tls", f"Ingress {doc.name} terminates TLS", "TLS"),),
            )
        for index, port in enumerate(get_path(doc.obj, "spec", "ports") or []):
            if doc.kind == "Service" and (port.get("port") == 443 or "https" in str(port.get("name", ""))):
                pointer = f"/spec/ports/{index}"
                return Outcome(
                    "pass",
                    (
                        doc.evidence(
                            pointer,
                            f"Service {doc.name} serves port {port.get('port')} ({port.get('name')})",
                            "TLS",
                        ),
                    ),
                )
    services = service_docs(inputs.manifests)
    return Outcome.of(
        [
            s.evidence("/spec/ports", f"Service {s.name}: no HTTPS port, no Ingress with tls", "TLS")
            for s in services
        ],
        [],
    )


def _images(inputs: ReviewInputs) -> Iterator[tuple[Workload, str, str]]:
    for w in workloads(inputs.manifests or ()):
        for pointer, container in w.containers():
            yield w, f"{pointer}/image", str(container.get("image", ""))


def image_not_latest(inputs: ReviewInputs) -> Outcome:
    if inputs.manifests is None:
        return unanswered(NO_MANIFESTS)
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
        return unanswered(NO_MANIFESTS)
    failures: list[Evidence] = []
    passes: list[Evidence] = []
    for w, pointer, image in _images(inputs):
        (passes if "@sha256:" in image else failures).append(
            w.ev(pointer, f"image {image}", "image@sha256:...")
        )
    return Outcome.of(failures, passes)
