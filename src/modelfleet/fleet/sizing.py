"""Memory estimates for placing models, and the one call that turns a spec file into a plan.

The estimate is deliberately simple: twice the artifact's bytes plus a fixed amount per session.
Users override it per model with ``memory_mib``. The factor is measured, not an arena's size:
runtime/onnx.py turns the ONNX Runtime arena off, so a loaded model holds its weights (prepacked by
default, which ONNX Runtime does in place of the unpacked copy: +118 MiB for MiniLM fp32 with it, +117 MiB
without, tests/integration/test_server_memory.py), the tokenizer and the session's graph, and a run's
activations are freed after the run.
RSS a model added to a server process (2-core machine, onnxruntime 1.32, intra_op_threads 2):

    artifact                       loaded + warmed    after 60 mixed runs (batch 1-32, 5-300 words), heap trimmed
    MiniLM fp32, 86.9 MiB          124-126 MiB 1.45×  130-164 MiB 1.5-1.9×
    MiniLM int8, 42.8 MiB           71-76 MiB  1.8×    83-84 MiB  2.0×

Not covered: a run's activations while it runs. They scale with batch × sequence length, not with the
file: MiniLM (either precision) peaked 500-750 MiB above its loaded size on a batch of 32 long texts,
and 60-70 MiB at batch 1. A text model with large batches needs `memory_mib` (or room left in the
pool's `server_overhead_mib`) for one full batch per instance.
"""

from __future__ import annotations

import math
from pathlib import Path

from modelfleet.config.base import load_spec
from modelfleet.config.fleet import FleetModelConfig, FleetSpec
from modelfleet.errors import NotFound
from modelfleet.fleet.plan import FleetPlan, plan_fleet

_MIB = 1024 * 1024
ARTIFACT_MEMORY_FACTOR = 2.0  # resident size ÷ artifact size, rounded up from the figures above
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
