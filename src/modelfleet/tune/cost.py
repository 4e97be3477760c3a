"""Cost maths, pure: $ per million conforming inferences, replicas for a target, packing onto nodes, cost split.

Packing is first-fit decreasing (by memory, then CPU) over replicas: simple, deterministic and within
11/9 of the fewest nodes for one dimension; it is not an optimal two-dimensional packing. The split of
a node's price follows OpenCost: each replica pays for max(request, usage) of CPU and of memory, at
per-vCPU and per-GiB rates that divide the node's price in OpenCost's default CPU : RAM ratio; what no
replica pays for is the idle share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# OpenCost's default prices ($0.031611 per vCPU-hour, $0.004237 per GiB-hour) give the ratio in which
# a node's price is split between its CPUs and its memory.
_CPU_TO_GIB_PRICE_RATIO = 0.031611 / 0.004237


def cost_per_million(price_per_h: float, goodput_per_s: float) -> float:
    """$ per 1M SLO-conforming inferences = price per hour ÷ (goodput per second × 3,600) × 10⁶."""
    if goodput_per_s <= 0:
        return math.inf
    return price_per_h / (goodput_per_s * 3600.0) * 1e6


def replicas_needed(target_rate_per_s: float, per_replica_goodput_per_s: float, headroom: float) -> int:
    """⌈target ÷ (per-replica goodput × headroom)⌉, at least 1."""
    if per_replica_goodput_per_s <= 0:
        raise ValueError("a replica with no goodput cannot serve any target")
    return max(1, math.ceil(target_rate_per_s / (per_replica_goodput_per_s * headroom) - 1e-9))


def replica_share(cpus: float, memory_mib: float, node_vcpu: int, node_memory_mib: float) -> float:
    """The share of a node one replica requests: the larger of its CPU and memory shares."""
    return max(cpus / node_vcpu, memory_mib / node_memory_mib)


@dataclass(frozen=True, slots=True)
class Workload:
    """Replicas of one model (or configuration) to place: each requests `cpus` and `memory_mib`,
    and uses `cpu_used` CPUs and `memory_used_mib` at its share of the target rate."""

    name: str
    replicas: int
    cpus: float
    memory_mib: float
    cpu_used: float
    memory_used_mib: float


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    replicas: tuple[str, ...]  # workload names, one entry per replica
    cpus_requested: float
    memory_requested_mib: float


@dataclass(frozen=True, slots=True)
class Allocation:
    """A workload's part of the fleet's price, and the idle part nobody uses."""

    name: str
    cost_per_h: float
    share: float  # of the whole fleet's price


@dataclass(frozen=True, slots=True)
class FleetCost:
    nodes: tuple[Node, ...]
    price_per_h: float  # every node, once
    allocations: tuple[Allocation, ...]
    idle_per_h: float

    @property
    def idle_share(self) -> float:
        return self.idle_per_h / self.price_per_h if self.price_per_h else 0.0


def pack(workloads: Sequence[Workload], node_vcpu: int, node_memory_mib: float) -> tuple[Node, ...]:
    """First-fit decreasing by (memory, CPU) of every replica onto identical nodes."""
    for item in workloads:
        if item.cpus > node_vcpu or item.memory_mib > node_memory_mib:
            raise ValueError(
                f"{item.name}: a replica needs {item.cpus} vCPU and {item.memory_mib:.0f} MiB, more than a "
                f"node's {node_vcpu} vCPU and {node_memory_mib:.0f} MiB"
            )
    replicas = sorted(
        ((item.memory_mib, item.cpus, item.name) for item in workloads for _ in range(item.replicas)),
        key=lambda r: (-r[0], -r[1], r[2]),
    )
    members: list[list[str]] = []
    used_cpu: list[float] = []
    used_memory: list[float] = []
    for memory, cpus, name in replicas:
        for index in range(len(members)):
            if (
                used_cpu[index] + cpus <= node_vcpu + 1e-9
                and used_memory[index] + memory <= node_memory_mib + 1e-9
            ):
                members[index].append(name)
                used_cpu[index] += cpus
                used_memory[index] += memory
                break
        else:
            members.append([name])
            used_cpu.append(cpus)
            used_memory.append(memory)
    return tuple(Node(i, tuple(members[i]), used_cpu[i], used_memory[i]) for i in range(len(members)))


def fleet_cost(
    workloads: Sequence[Workload], node_vcpu: int, node_memory_mib: float, node_price_per_h: float
) -> FleetCost:
    """Pack, price every node once, and split the price by max(request, usage) with the idle share left."""
    nodes = pack(workloads, node_vcpu, node_memory_mib)
    gib = node_memory_mib / 1024.0
    per_gib = node_price_per_h / (node_vcpu * _CPU_TO_GIB_PRICE_RATIO + gib)
    per_vcpu = per_gib * _CPU_TO_GIB_PRICE_RATIO
    total = node_price_per_h * len(nodes)
    allocations = []
    for item in workloads:
        cpu = max(item.cpus, item.cpu_used)
        memory_gib = max(item.memory_mib, item.memory_used_mib) / 1024.0
        cost = item.replicas * (cpu * per_vcpu + memory_gib * per_gib)
        allocations.append(Allocation(item.name, cost, cost / total if total else 0.0))
    idle = max(0.0, total - sum(a.cost_per_h for a in allocations))
    return FleetCost(nodes, total, tuple(allocations), idle)
