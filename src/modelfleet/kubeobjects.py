"""Pieces of Kubernetes pod specs shared by every manifest modelfleet renders (fleet servers, bench jobs)."""

from __future__ import annotations

from typing import Any


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
