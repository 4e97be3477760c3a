"""Planning: first-fit-decreasing packing by memory, replicas, serve specs per group, sizing from artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support.linear_model import make_artifact

from modelfleet.config.base import parse_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.errors import NotFound, SpecError
from modelfleet.fleet.plan import plan_fleet
from modelfleet.fleet.sizing import (
    SESSION_OVERHEAD_MIB,
    UNSIZED_MODEL_MIB,
    estimate_fleet_memory_mib,
    plan_from_spec,
)


def _fleet(models: list[dict[str, Any]], **pool: Any) -> FleetSpec:
    pool_spec = {"name": "cpu", "resources": {"memory_mib": 1256}, "server_overhead_mib": 256, **pool}
    return parse_spec({"name": "demo", "models": models, "pools": [pool_spec]}, FleetSpec)


def test_first_fit_decreasing_fills_servers_up_to_capacity() -> None:
    sizes = {"a": 600, "b": 500, "c": 400, "d": 300, "e": 200}
    spec = _fleet([{"name": name, "path": f"/m/{name}"} for name in sizes])
    plan = plan_fleet(spec, sizes)
    # Capacity per server: 1256 - 256 = 1000 MiB. FFD: [a600, c400], [b500, d300, e200].
    assert [g.model_names for g in plan.groups] == [("a", "c"), ("b", "d", "e")]
    for group in plan.groups:
        assert sum(group.model_memory_mib) <= 1000
        assert group.estimated_memory_mib == sum(group.model_memory_mib) + 256
    assert [g.name for g in plan.groups] == ["cpu-0", "cpu-1"]


def test_plan_is_deterministic_and_keeps_spec_order_inside_a_group() -> None:
    sizes = {name: 100 for name in "zyxwv"}
    spec = _fleet([{"name": name, "path": f"/m/{name}"} for name in sizes])
    first = plan_fleet(spec, sizes)
    second = plan_fleet(spec, dict(reversed(list(sizes.items()))))
    assert first.summary() == second.summary()
    assert first.groups[0].model_names == ("z", "y", "x", "w", "v")


def test_max_models_per_server_splits_groups_even_when_memory_fits() -> None:
    sizes = {f"m{i}": 10 for i in range(5)}
    spec = _fleet([{"name": name, "path": f"/m/{name}"} for name in sizes], max_models_per_server=2)
    plan = plan_fleet(spec, sizes)
    assert [len(g.models) for g in plan.groups] == [2, 2, 1]


def test_group_replicas_are_the_largest_demand_of_pool_and_models() -> None:
    spec = _fleet([{"name": "a", "path": "/m/a", "replicas": 5}, {"name": "b", "path": "/m/b"}], replicas=2)
    plan = plan_fleet(spec, {"a": 10, "b": 10})
    assert plan.groups[0].replicas == 5


def test_a_model_larger_than_a_server_is_refused_with_the_numbers() -> None:
    spec = _fleet([{"name": "huge", "path": "/m/huge"}])
    with pytest.raises(SpecError, match=r"needs about 5000 MiB but pool 'cpu' has room for 1000 MiB"):
        plan_fleet(spec, {"huge": 5000})


def test_pools_are_planned_separately() -> None:
    spec = parse_spec(
        {
            "name": "demo",
            "models": [
                {"name": "g", "path": "/m/g", "pool": "gpu"},
                {"name": "c", "path": "/m/c"},
            ],
            "pools": [{"name": "cpu"}, {"name": "gpu", "resources": {"accelerator_count": 1}}],
        },
        FleetSpec,
    )
    plan = plan_fleet(spec, {"g": 100, "c": 100})
    assert {g.name: g.model_names for g in plan.groups} == {"cpu-0": ("c",), "gpu-0": ("g",)}


def test_serve_spec_mirrors_model_settings_and_can_rewrite_paths() -> None:
    spec = _fleet(
        [
            {
                "name": "a",
                "path": "/m/a",
                "batching": {"max_batch_size": 7, "max_delay_s": 0.01},
                "instances": 2,
                "timeout_s": 3,
            },
            {"name": "r", "ref": "r@prod"},
        ],
        workers=3,
    )
    group = plan_fleet(spec, {"a": 10, "r": 10}).groups[0]
    serve = group.serve_spec("0.0.0.0", 8000, lambda m: Path("/models") / m.name, graceful_shutdown_s=12)
    assert serve.server.host == "0.0.0.0" and serve.server.port == 8000 and serve.server.workers == 3
    assert serve.server.graceful_shutdown_s == 12
    by_name = {m.name: m for m in serve.models}
    assert by_name["a"].path == Path("/models/a")
    assert (
        by_name["a"].batching.max_batch_size == 7
        and by_name["a"].instances == 2
        and by_name["a"].timeout_s == 3
    )
    assert by_name["r"].ref == "r@prod" and by_name["r"].path is None


def test_memory_is_estimated_from_artifact_files(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "a", "a")
    (artifact / "weights.bin").write_bytes(b"\0" * (3 * 1024 * 1024))  # 3 MiB more on disk
    spec = _fleet(
        [
            {"name": "a", "path": str(artifact)},
            {"name": "b", "path": "/m/b", "memory_mib": 42},
            {"name": "r", "ref": "r:1"},
        ]
    )
    estimates = estimate_fleet_memory_mib(spec)
    assert estimates["b"] == 42
    assert estimates["r"] == UNSIZED_MODEL_MIB
    # 2 × (3 MiB + a few hundred bytes), rounded up, plus the session overhead.
    assert estimates["a"] == 7 + SESSION_OVERHEAD_MIB


def test_missing_artifact_folder_is_reported(tmp_path: Path) -> None:
    spec = _fleet([{"name": "a", "path": str(tmp_path / "missing")}])
    with pytest.raises(NotFound, match="does not exist"):
        plan_from_spec(spec)
