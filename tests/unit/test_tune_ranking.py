"""Pricing a trial, the ranking and why each runner-up lost; the written fleet spec; re-verification."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.tune_results import hardware, tune_result

from modelfleet.config.base import load_spec
from modelfleet.config.fleet import FleetSpec
from modelfleet.tune.fleetspec import fleet_spec_from, write_fleet
from modelfleet.tune.ranking import price_trial
from modelfleet.tune.verify import compare


def test_price_trial_by_hand() -> None:
    # 1 CPU of a 2-vCPU, 4 GiB c7i.large ($0.08925/h): share 0.5, $0.044625/h per replica.
    pricing = price_trial(450.0, 180.0, 0.6, hardware(), target_rate_per_s=1000, headroom=0.7)
    assert pricing.replicas == 4  # 1000 / (450 * 0.7) = 3.17
    assert pricing.per_replica_rate_per_s == pytest.approx(250.0)
    assert pricing.nodes == 2  # two 1-CPU replicas per 2-vCPU node
    assert pricing.fleet_price_per_h == pytest.approx(2 * 0.08925)
    assert pricing.replica_price_per_h == pytest.approx(0.044625)
    assert pricing.cost_per_million == pytest.approx(0.044625 / (450 * 3600) * 1e6)


def test_ranking_by_fleet_price_then_cost_per_million() -> None:
    result = tune_result()
    # batch 8 (450/s) and batch 32 (430/s) both need 4 replicas on 2 nodes; batch 1 (200/s) needs 8 on 4.
    assert result.ranking == ["k1", "k2", "k0", "k3"]
    assert result.recommendation is not None and result.recommendation.key == "k1"
    assert "4 replica(s) at 450/s each on 2 × c7i.large ($0.1785/h)" in result.recommendation.why
    reasons = {r["key"]: r["why"] for r in result.recommendation.runners_up}
    assert reasons["k2"].startswith("same fleet price, but $")  # lost on $/1M at capacity
    assert reasons["k0"].startswith("$0.1785/h more: 8 replica(s)")
    assert reasons["k3"].startswith("meets the SLO at no rate tried (closest: 5/s")


def test_written_fleet_spec_loads_and_carries_the_winner(tmp_path: Path) -> None:
    result = tune_result()
    written = write_fleet(result, tmp_path / "fleet.yaml", "tuned")
    loaded = load_spec(tmp_path / "fleet.yaml", FleetSpec)
    assert loaded == fleet_spec_from(result, "tuned") == written
    pool, model = loaded.pools[0], loaded.models[0]
    assert pool.instance_type == "c7i.large" and pool.resources.cpu_cores == 1 and pool.replicas == 4
    assert pool.autoscaling.min_replicas == 4 and pool.autoscaling.max_replicas == 8
    assert pool.autoscaling.target_cpu_utilization_percent == 60  # measured 60 % of one CPU at target
    assert model.batching.max_batch_size == 8 and model.slo.latency_ms == 20 and model.slo.percentile == 99
    assert (tmp_path / "fleet.yaml").read_text().startswith("# Written by `modelfleet tune`")


def test_reverification_compares_goodput_and_p99_with_a_floor() -> None:
    ok = compare("k", 100, (100.0, 10.0), (95.0, 10.9), tolerance=0.10, floor_ms=1.0)
    assert ok.passed and ok.note == "within 10%"
    slow = compare("k", 100, (100.0, 10.0), (99.0, 12.5), tolerance=0.10, floor_ms=1.0)
    assert not slow.passed and "p99 12.50 ms vs predicted 10.00 ms (25% apart)" in slow.note
    lost = compare("k", 100, (100.0, 10.0), (80.0, 10.0), tolerance=0.10, floor_ms=1.0)
    assert not lost.passed and "goodput 80.0/s vs predicted 100.0/s" in lost.note
    # 2.0 vs 2.6 ms is 30 % apart but within the 1 ms timer floor.
    assert compare("k", 100, (100.0, 2.0), (100.0, 2.6), tolerance=0.10, floor_ms=1.0).passed
