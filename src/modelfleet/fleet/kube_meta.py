"""Names, labels and selectors of a fleet's Kubernetes objects: every kube_* module tags objects the same way."""

from __future__ import annotations

from typing import Any

from modelfleet.config.fleet import FleetSpec


def fleet_labels(spec: FleetSpec, component: str, group: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "modelfleet",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": spec.name,
        "app.kubernetes.io/managed-by": "modelfleet",
    }
    if group is not None:
        labels["modelfleet.io/group"] = group
    return {**spec.labels, **labels}


def fleet_selector(spec: FleetSpec, component: str, group: str | None = None) -> dict[str, str]:
    selector = {"app.kubernetes.io/instance": spec.name, "app.kubernetes.io/component": component}
    if group is not None:
        selector["modelfleet.io/group"] = group
    return selector


def fleet_metadata(spec: FleetSpec, name: str, component: str, group: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.kubernetes.namespace,
        "labels": fleet_labels(spec, component, group),
    }
