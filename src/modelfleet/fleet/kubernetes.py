"""Render a fleet plan as Kubernetes objects (pure dicts): the renderer's entry point.

Per server group: ConfigMap (serve spec), Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget.
For the router: ConfigMap (routing table), Deployment, Service, PodDisruptionBudget. Fleet-wide: one
ServiceAccount (no token), NetworkPolicies (default deny, then router and metrics ingress), optional
Namespace, ServiceMonitor (with a bearer key from a Secret while /metrics is protected; a second one
over HTTPS for a TLS router) and PrometheusRule.

One job per module, imports flowing down: this one assembles the list; kube_workloads (groups and
router), kube_network (NetworkPolicies) and kube_monitoring (Prometheus Operator objects) render, on
top of kube_pods (hardened containers and pods) and kube_meta (names and labels); kube_files writes
the result as a kustomize base or one YAML stream. Callers import all three entry points from here.
"""

from __future__ import annotations

import json

from modelfleet.fleet.kube_files import manifests_to_yaml, write_manifests
from modelfleet.fleet.kube_meta import fleet_labels, fleet_metadata
from modelfleet.fleet.kube_monitoring import monitoring_objects
from modelfleet.fleet.kube_network import network_policies
from modelfleet.fleet.kube_workloads import group_objects, router_objects
from modelfleet.fleet.plan import FleetPlan
from modelfleet.kubeobjects import KubeObject

__all__ = ["manifests_to_yaml", "render_fleet", "write_manifests"]


def render_fleet(plan: FleetPlan, for_delete: bool = False) -> list[KubeObject]:
    """Every Kubernetes object of the fleet, in apply order (namespace and identities first).

    ``for_delete``: the objects are only named for deletion, so checks that guard a working deployment
    (the ServiceMonitor's scrape credentials) do not stand in the way of tearing it down.
    """
    spec = plan.fleet
    k8s = spec.kubernetes
    objects: list[KubeObject] = []
    if k8s.create_namespace:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": k8s.namespace,
                    "labels": {
                        **fleet_labels(spec, "namespace"),
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
            }
        )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": fleet_metadata(spec, spec.name, "identity"),
            "automountServiceAccountToken": False,
        }
    )
    objects.extend(network_policies(spec))
    for group in plan.groups:
        objects.extend(group_objects(plan, group))
    objects.extend(router_objects(plan))
    objects.extend(monitoring_objects(plan, for_delete))
    # A JSON round trip gives every object its own nested dicts (no shared selectors) and proves
    # the result serialises.
    fresh: list[KubeObject] = json.loads(json.dumps(objects))
    return fresh
