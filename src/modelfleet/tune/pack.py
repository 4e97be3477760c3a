"""Several tuned models on shared nodes: each model's recommendation packed with the others, priced once.

Input is saved tune results (one per model, each tuned at its own target rate and SLO); each gives its
recommended trial's replicas, the CPU set and measured memory of one replica, and the CPU it used at its
per-replica target rate. Those replicas are packed onto nodes of one instance type (first-fit
decreasing, `cost.pack`), every node is priced once, and the price is split by OpenCost's rule,
max(request, usage), with the idle share shown. Compared with pricing each model's fleet on its own
nodes (what each results file says), the shared nodes are never dearer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from modelfleet.config.tune import PriceSpec
from modelfleet.errors import InvalidInput
from modelfleet.tune.cost import FleetCost, Workload, fleet_cost
from modelfleet.tune.prices import load_prices
from modelfleet.tune.results import HardwareRecord, TrialRecord, TuneResult, read_result


@dataclass(frozen=True, slots=True)
class PackedModel:
    name: str
    results_file: str
    configuration: str
    replicas: int
    separate_price_per_h: float  # the model's own fleet, on nodes of its own (from its results)


@dataclass(frozen=True, slots=True)
class PackPlan:
    instance_type: str
    node_vcpu: int
    node_memory_mib: int
    node_price_per_h: float
    models: tuple[PackedModel, ...]
    cost: FleetCost

    @property
    def separate_price_per_h(self) -> float:
        return sum(model.separate_price_per_h for model in self.models)


def pack_results(
    paths: list[Path], instance_type: str | None = None, prices: PriceSpec | None = None
) -> PackPlan:
    """Pack the recommendations of the tune results at `paths` onto shared nodes of `instance_type`
    (default: the largest node type any of them was mapped to). InvalidInput if a file has no
    recommendation or a replica does not fit the node type."""
    if len(paths) < 1:
        raise InvalidInput("--pack needs at least one tune results file")
    results = [(path, read_result(path)) for path in paths]
    table = load_prices(prices or PriceSpec())
    workloads: list[Workload] = []
    models: list[PackedModel] = []
    mapped: list[HardwareRecord] = []
    for path, result in results:
        trial, hardware = _recommended(path, result)
        mapped.append(hardware)
        cpus = float(len(hardware.cpus))
        cpu_used = cpus * ((trial.at_target.cpu_percent if trial.at_target else None) or 100.0) / 100.0
        name = trial.model_name
        if any(model.name == name for model in models):
            name = f"{name}-{len(models)}"
        workloads.append(Workload(name, trial.replicas, cpus, trial.memory_mib, cpu_used, trial.memory_mib))
        models.append(
            PackedModel(name, str(path), trial.label, trial.replicas, trial.fleet_price_per_h or math.nan)
        )
    node_type = (
        instance_type or max(mapped, key=lambda h: (h.instance_vcpu, h.instance_memory_mib)).instance_type
    )
    node = table.instance(node_type, "--instance-type")
    price = table.price_per_h(node_type)
    try:
        cost = fleet_cost(workloads, node.vcpu, node.memory_mib, price)
    except ValueError as exc:
        raise InvalidInput(f"--instance-type {node_type}: {exc}; choose a larger type") from None
    return PackPlan(node_type, node.vcpu, node.memory_mib, price, tuple(models), cost)


def _recommended(path: Path, result: TuneResult) -> tuple[TrialRecord, HardwareRecord]:
    if result.recommendation is None:
        raise InvalidInput(f"{path}: no recommendation (no configuration met its SLO); tune it again first")
    trial = result.trial(result.recommendation.key)
    return trial, result.hardware[trial.hardware]


def pack_summary(plan: PackPlan) -> dict[str, object]:
    """The plan as plain data (for --json and the tables)."""
    allocations = {a.name: a for a in plan.cost.allocations}
    return {
        "instance_type": plan.instance_type,
        "node": {
            "vcpu": plan.node_vcpu,
            "memory_mib": plan.node_memory_mib,
            "price_per_h": plan.node_price_per_h,
        },
        "nodes": [
            {
                "index": n.index,
                "replicas": list(n.replicas),
                "cpus": n.cpus_requested,
                "memory_mib": n.memory_requested_mib,
            }
            for n in plan.cost.nodes
        ],
        "models": [
            {
                "name": m.name,
                "results_file": m.results_file,
                "configuration": m.configuration,
                "replicas": m.replicas,
                "cost_per_h": round(allocations[m.name].cost_per_h, 4),
                "share": round(allocations[m.name].share, 4),
                "separate_price_per_h": m.separate_price_per_h,
            }
            for m in plan.models
        ],
        "price_per_h": round(plan.cost.price_per_h, 4),
        "idle_per_h": round(plan.cost.idle_per_h, 4),
        "idle_share": round(plan.cost.idle_share, 4),
        "separate_price_per_h": round(plan.separate_price_per_h, 4),
    }
