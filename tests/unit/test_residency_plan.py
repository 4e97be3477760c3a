"""The planner packs names on one artifact together, counted once, and spreads demand across groups."""

from __future__ import annotations

from typing import Any

import pytest

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import SpecError
from modelfleet.fleet.plan import plan_fleet


def _fleet(models: list[dict[str, Any]], **pool: Any) -> FleetSpec:
    pool_spec = {"name": "cpu", "resources": {"memory_mib": 1256}, "server_overhead_mib": 256, **pool}
    return parse_spec({"name": "demo", "models": models, "pools": [pool_spec]}, FleetSpec)


def test_names_on_one_artifact_share_a_group_and_its_memory_is_counted_once() -> None:
    # 1000 MiB of room per server; eight 300-MiB names on two artifacts would need three servers apart.
    models = [{"name": f"t{i}", "path": f"/m/{'ab'[i % 2]}"} for i in range(8)]
    plan = plan_fleet(_fleet(models), {f"t{i}": 300 for i in range(8)})
    assert len(plan.groups) == 1
    group = plan.groups[0]
    assert group.estimated_memory_mib == 2 * 300 + 256
    assert sorted(group.model_memory_mib) == [0] * 6 + [300, 300]


def test_an_artifact_with_more_names_than_a_server_takes_is_split_and_loaded_in_each() -> None:
    models = [{"name": f"t{i}", "path": "/m/shared"} for i in range(5)]
    plan = plan_fleet(_fleet(models, max_models_per_server=2), {f"t{i}": 400 for i in range(5)})
    assert [len(group.models) for group in plan.groups] == [2, 2, 1]
    assert [group.estimated_memory_mib for group in plan.groups] == [656, 656, 656]


def test_busy_models_go_to_the_least_demanded_group_they_fit_in() -> None:
    # Two servers are needed by memory (4 × 400 MiB, 1000 per server); first-fit would pair the two hot ones.
    models = [
        {"name": "hot-1", "path": "/m/h1", "demand_per_s": 500},
        {"name": "hot-2", "path": "/m/h2", "demand_per_s": 400},
        {"name": "cold-1", "path": "/m/c1"},
        {"name": "cold-2", "path": "/m/c2"},
    ]
    plan = plan_fleet(_fleet(models), dict.fromkeys(("hot-1", "hot-2", "cold-1", "cold-2"), 400))
    assert len(plan.groups) == 2
    for group in plan.groups:
        assert sum(1 for name in group.model_names if name.startswith("hot")) == 1


def test_a_pools_residency_reaches_every_servers_spec_and_must_fit_its_memory() -> None:
    residency = {"memory_budget_bytes": 500 * 2**20, "pinned": ["t0"], "max_cold_requests": 32}
    models = [{"name": f"t{i}", "path": f"/m/{i}"} for i in range(3)]
    plan = plan_fleet(_fleet(models, residency=residency), {f"t{i}": 400 for i in range(3)})
    specs = [group.serve_spec("127.0.0.1", 0) for group in plan.groups]
    assert len(specs) == 2
    for spec in specs:
        assert spec.residency.memory_budget_bytes == 500 * 2**20
        assert spec.residency.pinned == ["t0"] and spec.residency.max_cold_requests == 32
    # 1256 MiB less 256 overhead leave 1000 MiB for models: a larger budget is refused with both settings.
    with pytest.raises(SpecError, match=r"residency\.memory_budget_bytes .*resources\.memory_mib"):
        _fleet(models, residency={"memory_budget_bytes": 1001 * 2**20})
