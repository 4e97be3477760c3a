"""The router's traffic split, in process: shares within tolerance, canary choice, per-version windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import SpecError
from modelfleet.fleet.router_config import (
    CanaryRoute,
    TrafficSplit,
    Upstream,
    read_traffic_split,
    write_traffic_split,
)
from modelfleet.fleet.routing import Replica
from modelfleet.fleet.split import Split, window

DRAWS = 20_000


def _route(canary_percent: float, shadow_percent: float = 0.0, replicas: int = 2) -> CanaryRoute:
    upstreams = [
        Upstream(
            name=f"canary-{i}",
            group="canary",
            url=f"http://127.0.0.1:{9000 + i}",
            models=["m"],
            max_in_flight=2,
        )
        for i in range(replicas)
    ]
    return CanaryRoute(
        model="m", baseline_version="1", canary_version="2", canary_percent=canary_percent,
        shadow_percent=shadow_percent, upstreams=upstreams,
    )  # fmt: skip


def _split(canary_percent: float, shadow_percent: float = 0.0) -> Split:
    route = _route(canary_percent, shadow_percent)
    return Split(route, [Replica(upstream) for upstream in route.upstreams])


@pytest.mark.parametrize("percent", [1.0, 10.0, 33.3, 50.0, 90.0])
def test_canary_and_shadow_shares_are_within_tolerance(percent: float) -> None:
    split = _split(percent, shadow_percent=percent / 2)
    draws = np.random.default_rng(int(percent * 10)).random(DRAWS)
    canary = sum(split.to_canary(float(u)) for u in draws) / DRAWS * 100
    shadow = sum(split.to_shadow(float(u)) for u in draws) / DRAWS * 100
    # 20,000 draws: the standard error of a share p is sqrt(p(1-p)/n) ≤ 0.36 points; 1.2 points is > 3 sigma.
    assert abs(canary - percent) < 1.2, canary
    assert abs(shadow - percent / 2) < 1.2, shadow


def test_full_and_tiny_shares_are_exact_at_the_ends() -> None:
    assert all(_split(100.0).to_canary(u) for u in (0.0, 0.5, 0.999999))
    assert not _split(0.0).to_canary(0.0)
    assert _split(0.01).to_canary(0.00009) and not _split(0.01).to_canary(0.0001)


def test_choose_takes_the_least_loaded_ready_canary_below_its_limit() -> None:
    split = _split(10.0)
    first, second = split.replicas
    assert split.choose() is None  # not polled ready yet: the fleet's own replicas take the request
    first.ready = second.ready = True
    first.outstanding = 1
    assert split.choose() is second
    second.outstanding = 2  # at its limit
    assert split.choose() is first
    first.outstanding = 2
    assert split.choose() is None


def test_each_attempt_counts_for_its_version_and_windows_diff_snapshots() -> None:
    split = _split(50.0)
    baseline_replica = Replica(
        Upstream(name="cpu-0-0", group="cpu-0", url="http://127.0.0.1:1", models=["m"])
    )
    for _ in range(90):
        split.arm(baseline_replica).observe(200, 0.004)
    before = split.snapshot()
    for _ in range(99):
        split.arm(split.replicas[0]).observe(200, 0.002)
    split.arm(split.replicas[1]).observe(500, 0.9)
    after = split.snapshot()
    canary = window(before["canary"], after["canary"])
    assert (canary.requests, canary.errors) == (100, 1)
    assert canary.error_rate == pytest.approx(0.01)
    assert canary.p99_s is not None and 0.0015 < canary.p99_s <= 0.003  # the 99th of 100 is a fast one
    assert window(before["baseline"], after["baseline"]).requests == 0
    assert window(None, after["baseline"]).requests == 90
    assert after["canary_ready_replicas"] == 0 and after["canary_version"] == "2"


def test_split_file_round_trips_and_refuses_two_routes_for_one_model(tmp_path: Path) -> None:
    path = tmp_path / "traffic.json"
    assert read_traffic_split(path).routes == []  # no file: no split
    write_traffic_split(TrafficSplit(routes=[_route(10.0)]), path)
    assert read_traffic_split(path).routes[0].canary_percent == 10.0
    path.write_text(TrafficSplit(routes=[_route(10.0)]).model_dump_json().replace("10.0", "140.0"))
    with pytest.raises(SpecError, match="canary_percent"):
        read_traffic_split(path)
    with pytest.raises(ValueError, match="one canary route per model"):
        TrafficSplit(routes=[_route(10.0), _route(20.0)])
