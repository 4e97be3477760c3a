"""The Kubernetes object type, and pieces of pod specs shared by every object modelfleet renders
(fleet servers, bench jobs)."""

from __future__ import annotations

from typing import Any

# One whole Kubernetes object (apiVersion, kind, metadata, ...) as the plain dict the API and YAML use.
# Not modelfleet.manifest.Manifest, which is an artifact's description.
KubeObject = dict[str, Any]

# The modelfleet image's non-root user and group (the Dockerfile's `USER 10001:10001`). Every pod that
# runs the image runs as it; kube-score asks for an id above 10000 so it cannot collide with a host user.
RUN_AS_ID = 10001


def pod_security_context() -> dict[str, Any]:
    """The pod-level securityContext of every pod running the modelfleet image: its non-root user, seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def prefer_separate_nodes(selector: dict[str, str]) -> dict[str, Any]:
    """A pod affinity that prefers (not requires) one pod matching ``selector`` per node."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": selector},
                    },
                }
            ]
        }
    }
