"""Several tuned models packed onto shared nodes and priced once (saved results, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support import tune_results

from modelfleet.errors import InvalidInput
from modelfleet.tune.pack import pack_results, pack_summary
from modelfleet.tune.results import write_result


def _two_models(tmp_path: Path) -> list[Path]:
    a = tune_results.write(tmp_path / "a.json", tune_results.tune_result(target=1000.0))
    b_result = tune_results.tune_result(target=200.0)
    b_result.trials[0].model_name = b_result.trials[1].model_name = b_result.trials[2].model_name = "other"
    b = tmp_path / "b.json"
    write_result(b_result, b)
    return [a, b]


def test_models_share_nodes_priced_once_and_split_by_request_or_use(tmp_path: Path) -> None:
    paths = _two_models(tmp_path)
    plan = pack_results(paths, "c7i.2xlarge")  # 8 vCPU, 16 GiB: eight 1-CPU replicas a node
    summary = pack_summary(plan)
    replicas = [m.replicas for m in plan.models]
    assert [m.name for m in plan.models] == ["minilm", "other"]
    assert len(plan.cost.nodes) == -(-sum(replicas) // 8)  # CPU-bound: ceil(replicas / 8)
    assert sum(len(n.replicas) for n in plan.cost.nodes) == sum(replicas)
    assert plan.cost.price_per_h == pytest.approx(len(plan.cost.nodes) * plan.node_price_per_h)
    shares = sum(a.cost_per_h for a in plan.cost.allocations) + plan.cost.idle_per_h
    assert shares == pytest.approx(plan.cost.price_per_h)  # every dollar is someone's, or idle
    assert summary["separate_price_per_h"] == pytest.approx(
        sum(m.separate_price_per_h for m in plan.models), rel=1e-3
    )


def test_an_unknown_node_type_or_a_result_without_a_recommendation_is_refused(tmp_path: Path) -> None:
    paths = _two_models(tmp_path)
    with pytest.raises(InvalidInput, match=r"unknown instance type 'c7i\.huge'"):
        pack_results(paths, "c7i.huge")
    result = tune_results.tune_result()
    result.recommendation = None
    write_result(result, tmp_path / "none.json")
    with pytest.raises(InvalidInput, match="no recommendation"):
        pack_results([tmp_path / "none.json"])
