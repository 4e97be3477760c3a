"""Memory estimates for placing models, and the one call that turns a spec file into a plan.

The estimate is deliberately simple and documented: ONNX Runtime holds the weights once and an arena
of about the same size for activations and optimised copies, so a model needs roughly twice its
artifact's bytes plus a fixed amount for its session. Users override it per model with ``memory_mib``.
"""

from __future__ import annotations

import math
from pathlib import Path

from modelfleet.config.base import load_spec
from modelfleet.config.fleet import FleetModelConfig, FleetSpec
from modelfleet.errors import NotFound
from modelfleet.fleet.plan import FleetPlan, plan_fleet

_MIB = 1024 * 1024
ARTIFACT_MEMORY_FACTOR = 2.0
SESSION_OVERHEAD_MIB = 32
# A registry reference cannot be sized without the registry; assume a mid-sized model and say so.
UNSIZED_MODEL_MIB = 512


def artifact_size_bytes(artifact_dir: Path) -> int:
    if not artifact_dir.is_dir():
        raise NotFound(f"artifact folder {artifact_dir} does not exist (build it with `modelfleet build`)")
    return sum(path.stat().st_size for path in artifact_dir.rglob("*") if path.is_file())


def estimate_model_memory_mib(model: FleetModelConfig) -> int:
    if model.memory_mib is not None:
        return model.memory_mib
    if model.path is None:
        return UNSIZED_MODEL_MIB
    size_bytes = artifact_size_bytes(model.path)
    return math.ceil(size_bytes * ARTIFACT_MEMORY_FACTOR / _MIB) + SESSION_OVERHEAD_MIB


def estimate_fleet_memory_mib(spec: FleetSpec) -> dict[str, int]:
    return {model.name: estimate_model_memory_mib(model) for model in spec.models}


def plan_from_spec(spec: FleetSpec) -> FleetPlan:
    return plan_fleet(spec, estimate_fleet_memory_mib(spec))


def load_fleet_spec(path: Path | str) -> FleetSpec:
    return load_spec(path, FleetSpec)


def load_plan(path: Path | str) -> FleetPlan:
    """Read and validate a fleet spec, size its models and plan its server groups."""
    return plan_from_spec(load_fleet_spec(path))
