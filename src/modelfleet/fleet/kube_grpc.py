"""V2 gRPC on Kubernetes: the port on server and router containers, Services with `appProtocol: grpc`,
gRPC readiness probes (grpc.health.v1), and a headless Service per group for the router's channels.

A ClusterIP Service balances connections, not requests, and an HTTP/2 channel keeps one connection, so
a router channel to it would send all of a group's gRPC calls to one pod. The router's channel instead
resolves the group's headless Service (`dns:///`, one address per ready pod) with grpcio's round_robin;
the servers end connections after `grpc.max_connection_age_ms` (server/grpc_service.py), so channels
re-resolve and reach pods added by a scale-up.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import SpecError
from modelfleet.fleet.kube_meta import fleet_metadata, fleet_selector
from modelfleet.kubeobjects import KubeObject

# Triton's gRPC port: what `router.grpc_port: 0` means on Kubernetes, where a port is fixed.
DEFAULT_GRPC_PORT = 8001


def grpc_port(spec: FleetSpec) -> int | None:
    """The gRPC container and Service port of servers and router, or None when the fleet has no gRPC."""
    port = spec.router.grpc_port
    if port is None:
        return None
    port = port or DEFAULT_GRPC_PORT
    if port == spec.kubernetes.port or port < 1024:
        raise SpecError(
            f"fleet {spec.name}: router.grpc_port {port} must be 1024 or above and differ from "
            f"kubernetes.port {spec.kubernetes.port} (containers run unprivileged, one port per protocol)"
        )
    return port


def add_grpc_port(container: dict[str, Any], port: int, probe_readiness: bool = True) -> None:
    """The container's `grpc` port, and readiness from grpc.health.v1 on it (liveness stays on HTTP, so
    both ports are probed). Kubernetes' gRPC probes speak no TLS: a TLS router keeps its HTTPS probes."""
    container["ports"].append({"name": "grpc", "containerPort": port, "protocol": "TCP"})
    if probe_readiness:
        readiness = container["readinessProbe"]
        container["readinessProbe"] = {
            "grpc": {"port": port, "service": "inference.GRPCInferenceService"},
            **{key: value for key, value in readiness.items() if key != "httpGet"},
        }


def add_service_port(service: KubeObject, port: int) -> None:
    service["spec"]["ports"].append(
        {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    )


def headless_service(spec: FleetSpec, name: str, group: str, port: int) -> KubeObject:
    """`<name>-grpc`: every ready pod of a group as its own DNS record, for the router's round_robin."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": fleet_metadata(spec, f"{name}-grpc", "server", group),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": fleet_selector(spec, "server", group),
            "ports": [
                {"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
            ],
        },
    }


def upstream_address(spec: FleetSpec, group: str, port: int) -> str:
    """The router's channel target for a group: its headless Service, resolved to every ready pod."""
    return f"dns:///{spec.name}-{group}-grpc.{spec.kubernetes.namespace}.svc.cluster.local:{port}"
