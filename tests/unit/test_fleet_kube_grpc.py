"""V2 gRPC in rendered Kubernetes manifests: ports, `appProtocol: grpc` Services, gRPC readiness probes,
the headless Service per group the router's round_robin channels resolve, and the router's config."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import SpecError
from modelfleet.fleet.kubernetes import render_fleet
from modelfleet.fleet.plan import plan_fleet

KUBERNETES_VERSION = "1.30.0"


def _render(**router: Any) -> list[dict[str, Any]]:
    data = {"name": "demo", "models": [{"name": "a", "path": "/m/a"}], "router": router}
    spec = parse_spec(data, FleetSpec)
    return render_fleet(plan_fleet(spec, {"a": 200}))


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_grpc_ports_services_probes_and_router_config() -> None:
    objects = _render(grpc_port=0)
    for obj in objects:
        if obj["kind"] in ("Service", "Deployment", "NetworkPolicy"):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    for service in ("demo-cpu-0", "demo-router"):
        ports = _named(objects, "Service", service)["spec"]["ports"]
        assert {
            "name": "grpc",
            "port": 8001,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        } in ports
    headless = _named(objects, "Service", "demo-cpu-0-grpc")
    assert headless["spec"]["clusterIP"] == "None"
    for deployment in ("demo-cpu-0", "demo-router"):
        container = _named(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in container["ports"]
        assert container["readinessProbe"]["grpc"] == {
            "port": 8001,
            "service": "inference.GRPCInferenceService",
        }
        assert container["livenessProbe"]["httpGet"]["port"] == "http"  # both ports probed
    serve = yaml.safe_load(_named(objects, "ConfigMap", "demo-cpu-0-serve")["data"]["serve.yaml"])
    assert serve["server"]["grpc_port"] == 8001
    router = json.loads(_named(objects, "ConfigMap", "demo-router-config")["data"]["router.json"])
    assert router["grpc_port"] == 8001
    assert (
        router["upstreams"][0]["grpc_address"] == "dns:///demo-cpu-0-grpc.modelfleet.svc.cluster.local:8001"
    )
    ingress = _named(objects, "NetworkPolicy", "demo-server-ingress")["spec"]["ingress"][0]["ports"]
    assert {"protocol": "TCP", "port": 8001} in ingress


def test_without_grpc_nothing_changes() -> None:
    objects = _render()
    assert not [o for o in objects if o["metadata"]["name"].endswith("-grpc")]
    assert all(p["name"] == "http" for p in _named(objects, "Service", "demo-router")["spec"]["ports"])


def test_a_tls_router_keeps_https_probes() -> None:
    objects = _render(grpc_port=9001, tls_secret_name="router-tls")
    container = _named(objects, "Deployment", "demo-router")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "grpc", "containerPort": 9001, "protocol": "TCP"} in container["ports"]


def test_grpc_port_must_differ_from_the_http_port() -> None:
    with pytest.raises(SpecError, match=r"router\.grpc_port 8000 must .* differ from kubernetes\.port 8000"):
        _render(grpc_port=8000)
