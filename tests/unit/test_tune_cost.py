"""Cost maths with hand-computed figures: $/1M conforming, replicas, packing, the OpenCost split."""

from __future__ import annotations

import math

import pytest

from modelfleet.tune.cost import (
    Workload,
    cost_per_million,
    fleet_cost,
    pack,
    replica_share,
    replicas_needed,
)


def test_cost_per_million_conforming_inferences() -> None:
    # $0.36/h at 100 conforming/s: 360,000 an hour, so $1 per million.
    assert cost_per_million(0.36, 100.0) == pytest.approx(1.0)
    # c7i.large $0.08925/h at 250/s: 0.08925 / 900,000 * 1e6 = 0.0991666...
    assert cost_per_million(0.08925, 250.0) == pytest.approx(0.099166666, rel=1e-6)
    assert cost_per_million(1.0, 0.0) == math.inf


def test_replicas_for_a_target_with_headroom() -> None:
    assert replicas_needed(2000, 500, 0.7) == 6  # 2000 / 350 = 5.71
    assert replicas_needed(350, 500, 0.7) == 1  # exactly at the headroom: no extra replica
    assert replicas_needed(351, 500, 0.7) == 2
    assert replicas_needed(1, 10_000, 0.5) == 1
    with pytest.raises(ValueError):
        replicas_needed(10, 0, 0.7)


def test_replica_share_is_the_larger_of_cpu_and_memory() -> None:
    assert replica_share(1, 512, 2, 4096) == pytest.approx(0.5)
    assert replica_share(1, 3072, 4, 4096) == pytest.approx(0.75)


def test_first_fit_decreasing_packs_by_memory_then_cpu() -> None:
    big = Workload("big", replicas=2, cpus=1, memory_mib=3000, cpu_used=1, memory_used_mib=3000)
    small = Workload("small", replicas=3, cpus=1, memory_mib=1000, cpu_used=0.5, memory_used_mib=900)
    nodes = pack([small, big], node_vcpu=4, node_memory_mib=4096)
    # big+small on each of two nodes (3000+1000 <= 4096), the third small on a third node.
    assert [n.replicas for n in nodes] == [("big", "small"), ("big", "small"), ("small",)]
    assert nodes[0].cpus_requested == 2 and nodes[0].memory_requested_mib == 4000
    with pytest.raises(ValueError, match="more than a node"):
        pack([Workload("huge", 1, 8, 100, 8, 100)], node_vcpu=4, node_memory_mib=4096)


def test_cost_split_by_max_of_request_and_usage_leaves_an_idle_share() -> None:
    # One 2-vCPU, 4 GiB node at $0.10/h. Rates: per_gib = 0.10 / (2 r + 4), per_vcpu = r * per_gib.
    ratio = 0.031611 / 0.004237
    per_gib = 0.10 / (2 * ratio + 4)
    per_vcpu = ratio * per_gib
    a = Workload("a", replicas=1, cpus=1, memory_mib=1024, cpu_used=0.4, memory_used_mib=1536)
    b = Workload("b", replicas=1, cpus=0.5, memory_mib=512, cpu_used=0.75, memory_used_mib=256)
    cost = fleet_cost([a, b], node_vcpu=2, node_memory_mib=4096, node_price_per_h=0.10)
    assert len(cost.nodes) == 1 and cost.price_per_h == pytest.approx(0.10)
    by_name = {item.name: item for item in cost.allocations}
    assert by_name["a"].cost_per_h == pytest.approx(
        1.0 * per_vcpu + 1.5 * per_gib
    )  # request cpu, used memory
    assert by_name["b"].cost_per_h == pytest.approx(
        0.75 * per_vcpu + 0.5 * per_gib
    )  # used cpu, request memory
    idle = 0.10 - by_name["a"].cost_per_h - by_name["b"].cost_per_h
    assert cost.idle_per_h == pytest.approx(idle) and idle > 0
    assert cost.idle_share == pytest.approx(idle / 0.10)
    # A full node has no idle share.
    full = Workload("full", replicas=2, cpus=1, memory_mib=2048, cpu_used=1, memory_used_mib=2048)
    assert fleet_cost([full], 2, 4096, 0.10).idle_per_h == pytest.approx(0.0, abs=1e-12)
