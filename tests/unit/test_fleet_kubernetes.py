"""Rendered manifests: valid against the Kubernetes OpenAPI schema, and hardened object by object.

The properties checked are the ones Polaris, kube-score and the EKS best-practices guide look for:
non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, seccomp
RuntimeDefault, requests and limits, startup/readiness/liveness probes on the V2 health routes,
PDB, HPA without a competing replica count, default-deny NetworkPolicy, no service-account token,
topology spread over zones and nodes, image pinned by digest when one is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import InvalidInput, SpecError
from modelfleet.fleet.kubernetes import render_fleet, write_manifests
from modelfleet.fleet.plan import plan_fleet
from modelfleet.fleet.sizing import load_plan
from modelfleet.fleet.warnings import fleet_warnings
from modelfleet.kubeobjects import RUN_AS_ID, pod_security_context

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KUBERNETES_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # not in the core schema; checked by hand below

# The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) the renderer uses,
# written from its API reference: unknown fields are refused, as the API server's structural schema
# prunes them (a misspelt `tlsConfig` key would silently scrape without it).
_NAME_KEY = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
    "required": ["name", "key"],
    "additionalProperties": False,
}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"},
        "scheme": {"enum": ["http", "https"]},
        "authorization": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "credentials": _NAME_KEY},
            "required": ["credentials"],
            "additionalProperties": False,
        },
        "tlsConfig": {
            "type": "object",
            "properties": {
                "ca": {
                    "type": "object",
                    "properties": {"secret": _NAME_KEY, "configMap": _NAME_KEY},
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": False,
                },
                "serverName": {"type": "string", "minLength": 1},
                "insecureSkipVerify": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    },
    "required": ["port"],
    "additionalProperties": False,
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                    "required": ["matchLabels"],
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
            },
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
        },
    },
    "required": ["apiVersion", "kind", "metadata", "spec"],
}


def _render(data: dict[str, Any], for_delete: bool = False) -> list[dict[str, Any]]:
    spec = parse_spec(data, FleetSpec)
    return render_fleet(plan_fleet(spec, {m.name: 200 for m in spec.models}), for_delete)


def _base(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo",
        "models": [{"name": "a", "path": "/m/a"}, {"name": "b", "path": "/m/b"}],
    }
    data.update(overrides)
    return data


def _all_example_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{example.name}:{obj['kind']}/{obj['metadata']['name']}", obj)
        for example in sorted(EXAMPLES.glob("fleet-*.yaml"))
        for obj in render_fleet(load_plan(example))
    ]


def _container_user(pod: dict[str, Any]) -> tuple[int, int]:
    security = pod["containers"][0]["securityContext"]
    return security["runAsUser"], security["runAsGroup"]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


@pytest.mark.parametrize(
    ("label", "obj"), _all_example_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_rendered_object_matches_the_kubernetes_schema(label: str, obj: dict[str, Any]) -> None:
    if obj["kind"] in CRD_KINDS:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        if obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_a_broken_object() -> None:
    # The check above must be able to fail: a typo'd field is caught in strict mode.
    objects = _render(_base())
    deployment = _of_kind(objects, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_object_set_per_group_and_router() -> None:
    objects = _render(_base())
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == sorted(
        [
            ("ServiceAccount", "demo"),
            ("NetworkPolicy", "demo-default-deny"),
            ("NetworkPolicy", "demo-server-ingress"),
            ("NetworkPolicy", "demo-router-ingress"),
            ("NetworkPolicy", "demo-router-egress"),
            ("ConfigMap", "demo-cpu-0-serve"),
            ("Deployment", "demo-cpu-0"),
            ("Service", "demo-cpu-0"),
            ("PodDisruptionBudget", "demo-cpu-0"),
            ("HorizontalPodAutoscaler", "demo-cpu-0"),
            ("ConfigMap", "demo-router-config"),
            ("Deployment", "demo-router"),
            ("Service", "demo-router"),
            ("PodDisruptionBudget", "demo-router"),
        ]
    )
    assert all(o["metadata"]["namespace"] == "modelfleet" for o in objects)
    assert all(len(o["metadata"]["name"]) <= 63 for o in objects)


@pytest.mark.parametrize(
    "deployment",
    _of_kind(render_fleet(load_plan(EXAMPLES / "fleet-gpu.yaml")), "Deployment"),
    ids=lambda d: d["metadata"]["name"],
)
def test_pods_are_hardened_probed_limited_and_spread(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(deployment["spec"]["template"]["metadata"]["labels"][k] == v for k, v in selector.items())
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The image's user (above 10000, as kube-score asks), the same one the bench Job's pods run as.
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == RUN_AS_ID == 10001
    assert pod["securityContext"] == pod_security_context()
    assert _container_user(pod) == (RUN_AS_ID, RUN_AS_ID)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable scratch volume.
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    resources = container["resources"]
    for key in ("cpu", "memory", "ephemeral-storage"):
        assert key in resources["requests"] and key in resources["limits"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["livenessProbe"] != container["readinessProbe"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "server":
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    else:
        assert container["readinessProbe"]["httpGet"]["path"] == "/router/ready"
    assert "@sha256:" in container["image"]  # the example pins a digest
    assert container["imagePullPolicy"] == "Always"
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == selector
    assert pod["terminationGracePeriodSeconds"] > 5
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_gpu_pool_asks_for_the_accelerator_and_selects_nodes() -> None:
    objects = render_fleet(load_plan(EXAMPLES / "fleet-gpu.yaml"))
    gpu = next(o for o in _of_kind(objects, "Deployment") if o["metadata"]["name"] == "search-gpu-0")
    pod = gpu["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    cpu = next(o for o in _of_kind(objects, "Deployment") if o["metadata"]["name"] == "search-cpu-0")
    cpu_pod = cpu["spec"]["template"]["spec"]
    assert cpu_pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert cpu_pod["containers"][0]["resources"]["limits"]["cpu"] == "4000m"
    assert cpu_pod["containers"][0]["resources"]["requests"]["cpu"] == "2000m"


def test_hpa_owns_replicas_and_respects_model_floors() -> None:
    objects = render_fleet(load_plan(EXAMPLES / "fleet-gpu.yaml"))
    hpa = next(
        o for o in _of_kind(objects, "HorizontalPodAutoscaler") if o["metadata"]["name"] == "search-gpu-0"
    )
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "search-gpu-0",
    }
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    server_deployments = [
        d for d in _of_kind(objects, "Deployment") if d["metadata"]["name"] != "search-router"
    ]
    assert all("replicas" not in d["spec"] for d in server_deployments)


def test_without_autoscaling_the_deployment_carries_replicas_and_no_hpa() -> None:
    objects = _render(_base(pools=[{"name": "cpu", "replicas": 3, "autoscaling": {"enabled": False}}]))
    assert not _of_kind(objects, "HorizontalPodAutoscaler")
    server = next(d for d in _of_kind(objects, "Deployment") if d["metadata"]["name"] == "demo-cpu-0")
    assert server["spec"]["replicas"] == 3


def test_every_deployment_has_a_matching_pdb_and_service() -> None:
    objects = _render(_base())
    pdbs = {p["metadata"]["name"]: p for p in _of_kind(objects, "PodDisruptionBudget")}
    services = {s["metadata"]["name"]: s for s in _of_kind(objects, "Service")}
    for deployment in _of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector
        assert pdbs[name]["spec"]["maxUnavailable"] == 1
        assert services[name]["spec"]["selector"] == selector
        assert services[name]["spec"]["type"] == "ClusterIP"


def test_network_policies_deny_by_default_and_open_only_router_and_metrics() -> None:
    objects = _render(_base(kubernetes={"client_namespaces": ["web"], "monitoring": {"namespace": "prom"}}))
    policies = {p["metadata"]["name"]: p["spec"] for p in _of_kind(objects, "NetworkPolicy")}
    deny = policies["demo-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "demo"}
    server_in = policies["demo-server-ingress"]["ingress"][0]
    assert {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "router"}
        }
    } in server_in["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}} in server_in[
        "from"
    ]
    assert server_in["ports"] == [{"protocol": "TCP", "port": 8000}]
    router_in = policies["demo-router-ingress"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}} in router_in
    assert {"namespaceSelector": {}} not in router_in
    egress = policies["demo-router-egress"]["egress"]
    assert egress[0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert {"protocol": "UDP", "port": 53} in egress[1]["ports"]


def test_service_account_and_namespace() -> None:
    objects = _render(_base(kubernetes={"create_namespace": True, "namespace": "ml"}))
    [account] = _of_kind(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    [namespace] = _of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert objects[0]["kind"] == "Namespace"  # applied first


def test_serve_spec_configmap_points_at_image_paths_and_is_hashed_into_the_pod() -> None:
    objects = _render(_base())
    configmap = next(o for o in objects if o["metadata"]["name"] == "demo-cpu-0-serve")
    serve = yaml.safe_load(configmap["data"]["serve.yaml"])
    assert serve["server"]["host"] == "0.0.0.0" and serve["server"]["port"] == 8000
    assert [m["path"] for m in serve["models"]] == ["/models/a", "/models/b"]
    deployment = next(o for o in objects if o["metadata"]["name"] == "demo-cpu-0")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["modelfleet.io/serve-spec-sha256"]) == 64
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--spec",
        "/etc/modelfleet/serve.yaml",
    ]
    changed = _render(
        _base(models=[{"name": "a", "path": "/m/a", "timeout_s": 3}, {"name": "b", "path": "/m/b"}])
    )
    changed_deployment = next(o for o in changed if o["metadata"]["name"] == "demo-cpu-0")
    assert (
        changed_deployment["spec"]["template"]["metadata"]["annotations"]["modelfleet.io/serve-spec-sha256"]
        != annotations["modelfleet.io/serve-spec-sha256"]
    )


def test_router_config_routes_each_model_to_its_group_service() -> None:
    objects = _render(_base(pools=[{"name": "cpu", "max_models_per_server": 1}]))
    configmap = next(o for o in objects if o["metadata"]["name"] == "demo-router-config")
    router = json.loads(configmap["data"]["router.json"])
    assert {u["url"]: u["models"] for u in router["upstreams"]} == {
        "http://demo-cpu-0.modelfleet.svc.cluster.local:8000": ["a"],
        "http://demo-cpu-1.modelfleet.svc.cluster.local:8000": ["b"],
    }
    deployment = next(o for o in objects if o["metadata"]["name"] == "demo-router")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
        "modelfleet",
        "fleet",
        "router",
    ]


def test_auth_mounts_a_secret_reference_and_never_secret_data() -> None:
    objects = _render(_base(auth={"enabled": True, "secret_name": "keys-secret"}))
    assert not _of_kind(objects, "Secret")
    server = next(o for o in objects if o["metadata"]["name"] == "demo-cpu-0")
    pod = server["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "keys-secret"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "auth")
    assert mount["readOnly"] is True and not mount["mountPath"].startswith("/etc/modelfleet/")
    configmap = next(o for o in objects if o["metadata"]["name"] == "demo-cpu-0-serve")
    serve = yaml.safe_load(configmap["data"]["serve.yaml"])
    assert serve["auth"]["enabled"] is True
    assert serve["auth"]["keys_file"] == f"{mount['mountPath']}/keys"
    open_objects = _render(_base(auth={"enabled": False}))
    open_server = next(o for o in open_objects if o["metadata"]["name"] == "demo-cpu-0")
    assert all(v["name"] != "auth" for v in open_server["spec"]["template"]["spec"]["volumes"])
    open_configmap = next(o for o in open_objects if o["metadata"]["name"] == "demo-cpu-0-serve")
    assert yaml.safe_load(open_configmap["data"]["serve.yaml"])["auth"]["enabled"] is False


def test_the_router_reads_the_same_key_store_and_metrics_policy_as_the_servers() -> None:
    objects = _render(_base(auth={"enabled": True, "secret_name": "keys-secret", "protect_metrics": False}))
    router = next(o for o in objects if o["metadata"]["name"] == "demo-router")
    pod = router["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["secret"]["secretName"] == "keys-secret"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "auth")
    assert mount["readOnly"] is True
    config = json.loads(
        next(o for o in objects if o["metadata"]["name"] == "demo-router-config")["data"]["router.json"]
    )
    assert config["keys_file"] == f"{mount['mountPath']}/keys"
    assert config["protect_metrics"] is False
    serve_configmap = next(o for o in objects if o["metadata"]["name"] == "demo-cpu-0-serve")
    assert yaml.safe_load(serve_configmap["data"]["serve.yaml"])["auth"]["protect_metrics"] is False
    open_objects = _render(_base(auth={"enabled": False}))
    open_router = next(o for o in open_objects if o["metadata"]["name"] == "demo-router")
    assert all(v["name"] != "auth" for v in open_router["spec"]["template"]["spec"]["volumes"])
    open_config = next(o for o in open_objects if o["metadata"]["name"] == "demo-router-config")
    assert json.loads(open_config["data"]["router.json"])["keys_file"] is None


def test_image_is_pinned_by_digest_only_when_given() -> None:
    tagged = _render(_base(image={"repository": "r.example/mf", "tag": "1.2.3"}))
    assert (
        _of_kind(tagged, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "r.example/mf:1.2.3"
    )
    digest = "sha256:" + "ab" * 32
    pinned = _render(_base(image={"repository": "r.example/mf", "tag": "1.2.3", "digest": digest}))
    assert (
        _of_kind(pinned, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        == f"r.example/mf@{digest}"
    )


def test_monitoring_objects_are_optional_and_alert_on_each_model_slo() -> None:
    assert not _of_kind(_render(_base()), "ServiceMonitor")
    objects = _render(
        _base(
            models=[{"name": "a", "path": "/m/a", "slo": {"latency_ms": 40, "percentile": 95}}],
            auth={"enabled": False},
            kubernetes={
                "monitoring": {"service_monitor": True, "prometheus_rule": True, "scrape_interval_s": 30}
            },
        )
    )
    [monitor] = _of_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    [rule] = _of_kind(objects, "PrometheusRule")
    # Labelled for kube-prometheus-stack's default ruleSelector, besides the fleet's own labels.
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    rules = rule["spec"]["groups"][0]["rules"]
    latency = [r for r in rules if r["alert"] == "ModelfleetSLOLatencyBurnRate"]
    # p95 < 40 ms: 5% of requests may be slower; every SLO threshold is a router bucket edge, so requests
    # are counted slow from 0.04 s itself (not from the default 0.03 s edge below it); 14.4x the budget pages.
    assert 'le="0.04"' in latency[0]["expr"] and "> 0.72" in latency[0]["expr"]
    assert 'model="a"' in latency[0]["expr"]
    assert latency[0]["labels"] == {
        "fleet": "demo",
        "severity": "critical",
        "burn_rate": "14.4x",
        "window": "1h",
        "model": "a",
    }
    assert {r["alert"] for r in rules} == {
        "ModelfleetSLOErrorsBurnRate",
        "ModelfleetSLOLatencyBurnRate",
        "ModelfleetNoReadyReplica",
        "ModelfleetQueueWaitHigh",
        "ModelfleetLoadFailures",
        "ModelfleetRestartsHigh",
    }
    assert len(latency) == 3  # the workbook's three burn-rate rows
    relabelled = _render(
        _base(
            auth={"enabled": False},
            alerts={"rule_labels": {"prometheus": "main"}},
            kubernetes={"monitoring": {"prometheus_rule": True}},
        )
    )
    labels = _of_kind(relabelled, "PrometheusRule")[0]["metadata"]["labels"]
    assert labels["prometheus"] == "main" and "release" not in labels


_SCRAPED = {"service_monitor": True, "scrape_interval_s": 30}


def test_protected_metrics_are_scraped_with_a_bearer_key_from_the_named_secret() -> None:
    # auth on and protect_metrics are the defaults: every endpoint sends the `read` key.
    objects = _render(_base(kubernetes={"monitoring": {**_SCRAPED, "scrape_secret_name": "demo-prom"}}))
    [monitor] = _of_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "http",
            "path": "/metrics",
            "interval": "30s",
            "authorization": {"type": "Bearer", "credentials": {"name": "demo-prom", "key": "api-key"}},
        }
    ]
    # The Operator reads the Secret from the ServiceMonitor's own namespace: the fleet's.
    assert monitor["metadata"]["namespace"] == "modelfleet"
    other_key = _render(
        _base(
            kubernetes={
                "monitoring": {**_SCRAPED, "scrape_secret_name": "prom", "scrape_secret_key": "token"}
            }
        )
    )
    [endpoint] = _of_kind(other_key, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "prom", "key": "token"}
    # Only a reference: no Secret object and no key material is rendered.
    assert not _of_kind(objects, "Secret")


def test_protected_metrics_without_a_scrape_secret_fail_the_render_with_one_line() -> None:
    with pytest.raises(SpecError) as caught:
        _render(_base(kubernetes={"monitoring": _SCRAPED}))
    message = str(caught.value)
    assert "\n" not in message
    assert "kubernetes.monitoring.scrape_secret_name" in message
    assert "auth.protect_metrics: false" in message
    assert isinstance(caught.value, InvalidInput) and caught.value.exit_code == 2
    # Deleting such a fleet needs only the objects' names: no error, and no credentials rendered.
    doomed = _render(_base(kubernetes={"monitoring": _SCRAPED}), for_delete=True)
    assert "authorization" not in _of_kind(doomed, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    # Without a ServiceMonitor nothing scrapes, so nothing needs the key.
    rule_only = _render(_base(kubernetes={"monitoring": {"prometheus_rule": True}}))
    assert _of_kind(rule_only, "PrometheusRule") and not _of_kind(rule_only, "ServiceMonitor")


@pytest.mark.parametrize(
    "auth", [{"enabled": False}, {"protect_metrics": False}], ids=["auth-off", "metrics-unprotected"]
)
def test_unprotected_metrics_render_the_service_monitor_as_before(auth: dict[str, Any]) -> None:
    plain = _render(_base(auth=auth, kubernetes={"monitoring": _SCRAPED}))
    named = _render(_base(auth=auth, kubernetes={"monitoring": {**_SCRAPED, "scrape_secret_name": "prom"}}))
    [monitor] = _of_kind(plain, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert named == plain  # the Secret is not referenced while /metrics is open


def test_scrape_secret_names_and_keys_are_checked_when_the_spec_loads() -> None:
    for monitoring in (
        {"scrape_secret_name": "Prom_Key"},
        {"scrape_secret_name": "-prom"},
        {"scrape_secret_name": "prom", "scrape_secret_key": "api key"},
        {"scrape_secret_name": "prom", "scrape_secret_key": ""},
    ):
        with pytest.raises(SpecError, match="scrape_secret_"):
            parse_spec(_base(kubernetes={"monitoring": monitoring}), FleetSpec)
    spec = parse_spec(
        _base(
            kubernetes={"monitoring": {"scrape_secret_name": "prom.keys", "scrape_secret_key": "API_key.1"}}
        ),
        FleetSpec,
    )
    assert spec.kubernetes.monitoring.scrape_secret_name == "prom.keys"


def test_the_gpu_example_scrapes_with_its_prometheus_secret() -> None:
    objects = render_fleet(load_plan(EXAMPLES / "fleet-gpu.yaml"))
    [endpoint] = _of_kind(objects, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "search-prometheus", "key": "api-key"},
    }
    spec = load_plan(EXAMPLES / "fleet-gpu.yaml").fleet
    assert any(
        "Secret search-prometheus (key `api-key`)" in note for note in fleet_warnings(spec, kubernetes=True)
    )


def test_written_base_is_kustomize_friendly(tmp_path: Path) -> None:
    objects = _render(_base())
    written = write_manifests(objects, tmp_path / "out")
    kustomization = yaml.safe_load((tmp_path / "out" / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert len(kustomization["resources"]) == len(objects) == len(written) - 1
    for name, obj in zip(kustomization["resources"], objects, strict=True):
        text = (tmp_path / "out" / name).read_text()
        assert "&id" not in text and "*id" not in text  # no YAML anchors: every tool reads it
        assert yaml.safe_load(text) == obj


def test_router_tls_mounts_the_secret_probes_over_https_and_validates() -> None:
    data = _base(router={"tls_secret_name": "router-cert", "max_in_flight_per_replica": 40})
    objects = _render(data)
    spec = parse_spec(data, FleetSpec)
    replicas = {g.name: g.replicas for g in plan_fleet(spec, {m.name: 200 for m in spec.models}).groups}
    assert not _of_kind(objects, "Secret")  # a reference only, never key material
    router = next(o for o in objects if o["metadata"]["name"] == "demo-router")
    kubernetes_validate.validate(router, KUBERNETES_VERSION, strict=True)
    pod = router["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "router-tls")
    assert volume["secret"]["secretName"] == "router-cert"
    assert {item["key"] for item in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "router-tls")
    assert mount["readOnly"] is True and not mount["mountPath"].startswith("/etc/modelfleet/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    config = json.loads(
        next(o for o in objects if o["metadata"]["name"] == "demo-router-config")["data"]["router.json"]
    )
    assert config["tls_cert_file"] == f"{mount['mountPath']}/tls.crt"
    assert config["tls_key_file"] == f"{mount['mountPath']}/tls.key"
    # Each upstream is a group's Service: the per-replica limit times the group's replicas.
    assert {u["name"]: u["max_in_flight"] for u in config["upstreams"]} == {
        name: 40 * count for name, count in replicas.items()
    }
    plain = _render(_base())
    plain_router = next(o for o in plain if o["metadata"]["name"] == "demo-router")
    plain_container = plain_router["spec"]["template"]["spec"]["containers"][0]
    assert "scheme" not in plain_container["readinessProbe"]["httpGet"]
    assert all(v["name"] != "router-tls" for v in plain_router["spec"]["template"]["spec"]["volumes"])
    with pytest.raises(SpecError):
        parse_spec(_base(router={"tls_secret_name": "Not_A_Name"}), FleetSpec)
    with pytest.raises(SpecError):
        parse_spec(_base(router={"tls_cert_file": "/c.pem"}), FleetSpec)  # a certificate without its key


def test_servers_write_their_audit_log_to_stdout_unless_audit_is_off() -> None:
    def audit_env(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for obj in objects:
            if obj["kind"] == "Deployment":
                container = obj["spec"]["template"]["spec"]["containers"][0]
                found[obj["metadata"]["name"]] = [
                    e["value"] for e in container.get("env", []) if e["name"] == "MODELFLEET_AUDIT_LOG"
                ]
        return found

    on = audit_env(_render(_base()))
    assert on and all(values == ["-"] for name, values in on.items() if not name.endswith("-router"))
    off = audit_env(_render(_base(audit={"enabled": False})))
    assert all(values == [] for values in off.values())


def _matches(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    labels = obj["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def _tls_monitored(monitoring: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(ServiceMonitors by name, every object) of a fleet whose router serves TLS."""
    objects = _render(
        _base(
            router={"tls_secret_name": "router-cert"},
            kubernetes={"monitoring": {**_SCRAPED, "scrape_secret_name": "demo-prom", **monitoring}},
        )
    )
    return {m["metadata"]["name"]: m for m in _of_kind(objects, "ServiceMonitor")}, objects


def test_a_tls_router_is_scraped_over_https_trusting_its_own_certificate() -> None:
    rendered, objects = _tls_monitored({})
    assert set(rendered) == {"demo", "demo-router"}
    for monitor in rendered.values():
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    bearer = {"type": "Bearer", "credentials": {"name": "demo-prom", "key": "api-key"}}
    # The servers stay plain HTTP inside the fleet; only the router's endpoint speaks HTTPS.
    assert rendered["demo"]["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "authorization": bearer}
    ]
    router_service = next(o for o in _of_kind(objects, "Service") if o["metadata"]["name"] == "demo-router")
    assert rendered["demo-router"]["spec"]["endpoints"] == [
        {
            "port": "http",
            "path": "/metrics",
            "interval": "30s",
            "authorization": bearer,
            "scheme": "https",
            # Prometheus dials pod addresses: the name checked is the router Service's, as clients call it.
            "tlsConfig": {
                "ca": {"secret": {"name": "router-cert", "key": "tls.crt"}},
                "serverName": f"{router_service['metadata']['name']}.modelfleet.svc",
            },
        }
    ]
    # Between them the two select every Service once: the router only by its own.
    services = _of_kind(objects, "Service")
    for service in services:
        selected_by = [n for n, m in rendered.items() if _matches(m["spec"]["selector"], service)]
        assert selected_by == (["demo-router"] if service is router_service else ["demo"])
    assert len(services) >= 2 and not _of_kind(objects, "Secret")  # references only, never key material


def test_the_router_scrape_trusts_a_named_ca_or_skips_the_check_only_when_asked() -> None:
    named, _ = _tls_monitored(
        {
            "router_ca_secret_name": "fleet-ca",
            "router_ca_secret_key": "root.pem",
            "router_server_name": "api.example.com",
        }
    )
    [endpoint] = named["demo-router"]["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "fleet-ca", "key": "root.pem"}},
        "serverName": "api.example.com",
    }
    default_key, _ = _tls_monitored({"router_ca_secret_name": "fleet-ca"})
    assert default_key["demo-router"]["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    insecure, _ = _tls_monitored({"router_insecure_skip_verify": True})
    [endpoint] = insecure["demo-router"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    jsonschema.validate(insecure["demo-router"], SERVICE_MONITOR_SCHEMA)
    # Without router TLS the settings change nothing: one ServiceMonitor over HTTP, as before.
    plain = _render(
        _base(
            kubernetes={"monitoring": {**_SCRAPED, "scrape_secret_name": "p", "router_ca_secret_name": "ca"}}
        )
    )
    [monitor] = _of_kind(plain, "ServiceMonitor")
    assert "scheme" not in monitor["spec"]["endpoints"][0]
    for monitoring, named_field in (
        ({"router_ca_secret_name": "ca", "router_insecure_skip_verify": True}, "router_insecure_skip_verify"),
        ({"router_ca_secret_name": "Fleet_CA"}, "router_ca_secret_name"),
        ({"router_ca_secret_key": "ca crt"}, "router_ca_secret_key"),
        ({"router_server_name": "not a name"}, "router_server_name"),
    ):
        with pytest.raises(SpecError, match=named_field):
            parse_spec(_base(kubernetes={"monitoring": monitoring}), FleetSpec)


def test_the_service_monitor_schema_check_can_fail() -> None:
    monitor = _tls_monitored({})[0]["demo-router"]
    monitor["spec"]["endpoints"][0]["tlsConfig"]["serverNmae"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    monitor = _tls_monitored({})[0]["demo-router"]
    monitor["spec"]["endpoints"][0]["scheme"] = "HTTPS"  # the Operator's enum is lower-case
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
