"""The recommendation as a fleet spec: one pool shaped like the winner's hardware, the model with its batching.

Autoscaling bounds come from the measured per-replica capacity: the minimum is the replicas the target
rate needs at the headroom (at least 2, so a node drain keeps the model up), the maximum twice that.
The HorizontalPodAutoscaler steers CPU, so its target is the CPU share a replica used at its
per-replica target rate (measured), rounded up to the autoscaler's allowed range.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from modelfleet.bench.slo import goodput_limit_ms, parse_slo
from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import (
    AutoscalingConfig,
    FleetModelConfig,
    FleetSpec,
    PoolConfig,
    ResourcesConfig,
    SloConfig,
)
from modelfleet.config.serve import BatchingConfig
from modelfleet.fileio import write_atomic
from modelfleet.tune.results import TuneResult

_MIN_SERVER_MEMORY_MIB = 256


def _percentile(slo: str) -> float:
    gates = parse_slo(slo)
    limit = goodput_limit_ms(gates)
    metric = next((g.metric for g in gates if g.threshold == limit), "p99")
    return float(metric[1:]) if metric.startswith("p") else 99.0


def fleet_spec_from(result: TuneResult, name: str, model_name: str | None = None) -> FleetSpec:
    """A validated FleetSpec for the recommended trial of ``result``."""
    if result.recommendation is None:
        raise ValueError("no recommendation to write: no configuration met the SLO")
    trial = result.trial(result.recommendation.key)
    hardware = result.hardware[trial.hardware]
    settings = trial.settings
    cpus = len(hardware.cpus)
    memory_mib = hardware.memory_mib or max(
        _MIN_SERVER_MEMORY_MIB, math.ceil(trial.memory_mib * 1.25 / 64) * 64
    )
    cpu_share = ((trial.at_target.cpu_percent if trial.at_target else None) or 70.0) / cpus
    target_cpu = min(100, max(10, math.ceil(cpu_share)))
    min_replicas = max(2, trial.replicas)
    pool = PoolConfig(
        name="tuned",
        replicas=min_replicas,
        workers=int(settings["workers"]),
        resources=ResourcesConfig(cpu_cores=cpus, memory_mib=memory_mib),
        server_overhead_mib=min(256, memory_mib // 4),
        instance_type=hardware.instance_type,
        autoscaling=AutoscalingConfig(
            min_replicas=min_replicas,
            max_replicas=2 * min_replicas,
            target_cpu_utilization_percent=target_cpu,
        ),
    )
    gates = parse_slo(result.slo)
    model = FleetModelConfig(
        name=model_name or trial.model_name,
        path=Path(trial.artifact),
        pool="tuned",
        batching=BatchingConfig(
            max_batch_size=int(settings["max_batch_size"]), max_delay_s=float(settings["max_delay_s"])
        ),
        instances=int(settings["instances"]),
        intra_op_threads=int(settings["intra_op_threads"]),
        length_grouping=bool(settings.get("length_grouping", True)),
        memory_mib=max(1, math.ceil(trial.memory_mib)),
        slo=SloConfig(latency_ms=goodput_limit_ms(gates) or 100.0, percentile=_percentile(result.slo)),
    )
    spec = FleetSpec(name=name, models=[model], pools=[pool])
    # Round-trip through the loader's validation, as `fleet up/render` will read it.
    return parse_spec(spec.model_dump(mode="json"), FleetSpec, "the written fleet spec")


def write_fleet(result: TuneResult, path: Path, name: str, model_name: str | None = None) -> FleetSpec:
    spec = fleet_spec_from(result, name, model_name)
    assert result.recommendation is not None
    trial = result.trial(result.recommendation.key)
    header = (
        f"# Written by `modelfleet tune` from {result.started_at}: {trial.label}.\n"
        f"# Measured capacity {trial.capacity_per_s:,.1f}/s per replica under {result.slo}; target "
        f"{result.target_rate_per_s:,.0f}/s at headroom {result.headroom:g} needs {trial.replicas} replica(s), "
        f"{trial.nodes} × {result.hardware[trial.hardware].instance_type} (${trial.fleet_price_per_h or 0:.4f}/h).\n"
    )
    body = yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    write_atomic(path, (header + body).encode())
    return spec
