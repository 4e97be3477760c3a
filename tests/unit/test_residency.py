"""The residency policy (what to unload for a memory budget) and the content key that decides sharing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from modelfleet.config.residency import ResidencyConfig
from modelfleet.manifest import Manifest, Source, TensorField
from modelfleet.server.residency import Demand, Resident, choose_evictions, decayed, value
from modelfleet.server.sessions import content_key
from modelfleet.types import Datatype

MIB = 1 << 20
HALF_LIFE_S = 60.0


def _resident(
    key: str, size_mib: int, load_s: float, hits: int = 0, at: float = 0.0, **flags: bool
) -> Resident:
    demand = Demand()
    for _ in range(hits):
        demand.hit(at, HALF_LIFE_S)
    return Resident(key=key, size_bytes=size_mib * MIB, load_s=load_s, demand=demand, **flags)


def test_demand_halves_every_half_life() -> None:
    demand = Demand()
    for _ in range(8):
        demand.hit(100.0, HALF_LIFE_S)
    assert demand.at(100.0, HALF_LIFE_S) == pytest.approx(8.0)
    assert demand.at(160.0, HALF_LIFE_S) == pytest.approx(4.0)
    assert demand.at(220.0, HALF_LIFE_S) == pytest.approx(2.0)
    assert decayed(8.0, 100.0, 50.0, HALF_LIFE_S) == 8.0  # a clock read before the last hit never grows it


def test_nothing_is_evicted_while_everything_fits() -> None:
    residents = [_resident("a", 100, 1.0), _resident("b", 100, 1.0)]
    assert choose_evictions(residents, 300 * MIB, 100 * MIB, now=0.0, half_life_s=HALF_LIFE_S) == []


def test_the_least_valuable_goes_first_not_the_least_recently_used() -> None:
    now = 1000.0
    # Touched a moment ago, but large and quick to load again: worth little per byte.
    big_cheap = _resident("big-cheap", 400, 0.05, hits=3, at=now - 1)
    # Touched a minute earlier than that, small and slow to reload: LRU would evict it first.
    small_slow = _resident("small-slow", 50, 2.0, hits=3, at=now - 61)
    hot = _resident("hot", 100, 1.0, hits=500, at=now)
    chosen = choose_evictions([small_slow, big_cheap, hot], 500 * MIB, 100 * MIB, now, HALF_LIFE_S)
    assert chosen == ["big-cheap"]
    assert value(big_cheap, now, HALF_LIFE_S) < value(small_slow, now, HALF_LIFE_S)


def test_demand_decides_between_equal_artifacts() -> None:
    now = 500.0
    residents = [_resident(f"m{i}", 100, 1.0, hits=i, at=now) for i in range(5)]
    # 500 MiB loaded, 200 incoming, budget 450: 250 MiB must go, the three least asked-for.
    assert choose_evictions(residents, 450 * MIB, 200 * MIB, now, HALF_LIFE_S) == ["m0", "m1", "m2"]


def test_old_demand_fades() -> None:
    now = 3600.0
    once_hot = _resident("once-hot", 100, 1.0, hits=1000, at=0.0)  # 60 half-lives ago
    steady = _resident("steady", 100, 1.0, hits=2, at=now - 10)
    assert choose_evictions([steady, once_hot], 150 * MIB, 0, now, HALF_LIFE_S) == ["once-hot"]


def test_pinned_and_busy_stay_even_over_the_budget() -> None:
    residents = [
        _resident("pinned", 300, 0.1, pinned=True),
        _resident("busy", 300, 0.1, busy=True),
        _resident("idle", 10, 9.0, hits=100, at=0.0),
    ]
    assert choose_evictions(residents, 100 * MIB, 50 * MIB, now=0.0, half_life_s=HALF_LIFE_S) == ["idle"]


def _manifest(name: str, model_sha: str, tokenizer_sha: str = "b" * 64) -> Manifest:
    return Manifest(
        name=name,
        created_at=datetime.now(UTC).isoformat(),
        source=Source(kind="onnx", path=f"{name}.onnx", sha256="0" * 64),
        inputs=[TensorField(name="x", datatype=Datatype.FP32, shape=[-1, 4])],
        outputs=[TensorField(name="y", datatype=Datatype.FP32, shape=[-1, 3])],
        files={"model.onnx": model_sha, "tokenizer.json": tokenizer_sha},
    )


def test_content_key_ignores_names_and_build_records_but_not_content_or_runtime_options() -> None:
    key = content_key(_manifest("a", "1" * 64), intra_op_threads=2, length_grouping=True)
    assert content_key(_manifest("b", "1" * 64), 2, True) == key  # another name, another build time
    assert content_key(_manifest("a", "2" * 64), 2, True) != key  # other weights
    assert content_key(_manifest("a", "1" * 64, tokenizer_sha="c" * 64), 2, True) != key
    assert content_key(_manifest("a", "1" * 64), 1, True) != key  # a session opened with other threads
    assert content_key(_manifest("a", "1" * 64), 2, True, prepack_weights=False) != key  # other weight layout
    assert content_key(_manifest("a", "1" * 64), 2, False) != key


def test_residency_defaults_keep_every_model_loaded() -> None:
    config = ResidencyConfig()
    assert config.memory_budget_bytes is None and not config.lazy
    assert ResidencyConfig(memory_budget_bytes=1).lazy


def test_each_worker_gets_an_equal_share_of_the_budget() -> None:
    config = ResidencyConfig(memory_budget_bytes=1000, pinned=["a"])
    assert config.per_worker(4).memory_budget_bytes == 250
    assert config.per_worker(4).pinned == ["a"]
    assert config.per_worker(1) is config
    assert ResidencyConfig().per_worker(4).memory_budget_bytes is None
