"""The fleet's NetworkPolicies: deny by default, then let in only what the fleet needs.

Servers take traffic from the router and the monitoring namespace; the router from the client
namespaces (all, unless `kubernetes.client_namespaces` names some) and the monitoring namespace, and
may reach only the servers and the cluster DNS; the servers reach nothing.
"""

from __future__ import annotations

from typing import Any

from modelfleet.config.fleet import FleetSpec
from modelfleet.fleet.kube_grpc import grpc_port
from modelfleet.fleet.kube_meta import fleet_metadata, fleet_selector
from modelfleet.kubeobjects import KubeObject


def network_policies(spec: FleetSpec) -> list[KubeObject]:
    """Default deny for every fleet pod, then server ingress, router ingress and router egress."""
    k8s = spec.kubernetes
    port = [{"protocol": "TCP", "port": k8s.port}]
    grpc = grpc_port(spec)
    if grpc is not None:
        port.append({"protocol": "TCP", "port": grpc})
    fleet_pods = {"matchLabels": {"app.kubernetes.io/instance": spec.name}}
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s.monitoring.namespace}}
    }
    if k8s.client_namespaces:
        clients: list[dict[str, Any]] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            for ns in k8s.client_namespaces
        ]
    else:
        clients = [{"namespaceSelector": {}}]
    router_pods = {"podSelector": {"matchLabels": fleet_selector(spec, "router")}}
    server_pods = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": "server"}
        }
    }
    dns = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": fleet_metadata(spec, f"{spec.name}-default-deny", "network"),
            "spec": {"podSelector": fleet_pods, "policyTypes": ["Ingress", "Egress"]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": fleet_metadata(spec, f"{spec.name}-server-ingress", "network"),
            "spec": {
                "podSelector": server_pods["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [router_pods, monitoring], "ports": port}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": fleet_metadata(spec, f"{spec.name}-router-ingress", "network"),
            "spec": {
                "podSelector": router_pods["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [*clients, monitoring], "ports": port}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": fleet_metadata(spec, f"{spec.name}-router-egress", "network"),
            "spec": {
                "podSelector": router_pods["podSelector"],
                "policyTypes": ["Egress"],
                "egress": [{"to": [server_pods], "ports": port}, dns],
            },
        },
    ]
