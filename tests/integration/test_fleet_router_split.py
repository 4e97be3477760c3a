"""The router's traffic split with real processes: a router and two model servers on 127.0.0.1, the split
file rewritten while it runs (no restart): shares within tolerance, a bad file ignored, removal restores
all traffic to the baseline, shadow answers compared and never returned."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.linear_model import infer_body, make_artifact
from tests.support.servers import start_router, start_server, stop, wait_for

from modelfleet.fleet.router_config import (
    CanaryRoute,
    RouterSettings,
    TrafficSplit,
    Upstream,
    write_router_settings,
    write_traffic_split,
)

pytestmark = pytest.mark.timeout(90)
REQUESTS = 400


def _upstream(name: str, port: int) -> Upstream:
    return Upstream(
        name=name, group=name, url=f"http://127.0.0.1:{port}", models=["linear"], max_in_flight=16
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Upstream]]:
    root = tmp_path_factory.mktemp("split")
    baseline, baseline_port = start_server([make_artifact(root / "v1", "linear", 1)], root)
    canary, canary_port = start_server([make_artifact(root / "v2", "linear", 2)], root)
    split_file = root / "traffic.json"
    config = root / "router.json"
    write_router_settings(
        RouterSettings(
            fleet="split", port=0, health_interval_s=0.1, upstreams=[_upstream("base-0", baseline_port)],
            split_file=split_file,
        ),
        config,
    )  # fmt: skip
    router, port = start_router(config)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/v2/health/ready", 60)
        yield url, split_file, _upstream("canary-0", canary_port)
    finally:
        for process in (router, baseline, canary):
            stop(process)


def _split(url: str) -> dict[str, Any] | None:
    split = httpx.get(f"{url}/fleet/status", timeout=5).json()["splits"].get("linear")
    return split if isinstance(split, dict) else None


def _apply(
    url: str, split_file: Path, routes: list[CanaryRoute], wanted: float | None
) -> dict[str, Any] | None:
    write_traffic_split(TrafficSplit(routes=routes), split_file)
    for _ in range(100):
        current = _split(url)
        if (current is None and wanted is None) or (
            current is not None
            and current["canary_percent"] == wanted
            and current["canary_ready_replicas"] == 1
        ):
            return current
        time.sleep(0.05)
    raise AssertionError(f"the router did not apply the split: {_split(url)}")


def _send(url: str, count: int) -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [
            client.post(f"{url}/v2/models/linear/infer", json=infer_body()).status_code for _ in range(count)
        ]


def test_split_shares_reload_and_removal(setup: tuple[str, Path, Upstream]) -> None:
    url, split_file, canary = setup
    route = CanaryRoute(
        model="linear", baseline_version="1", canary_version="2", canary_percent=30, upstreams=[canary]
    )
    before = _apply(url, split_file, [route], 30)
    assert before is not None
    assert set(_send(url, REQUESTS)) == {200}
    after = _split(url)
    assert after is not None
    canary_count = after["canary"]["requests"] - before["canary"]["requests"]
    baseline_count = after["baseline"]["requests"] - before["baseline"]["requests"]
    assert canary_count + baseline_count == REQUESTS
    # 400 draws at 30 %: the standard error is 2.3 points; 10 points is over 4 sigma.
    assert abs(canary_count / REQUESTS - 0.30) < 0.10, canary_count

    # A file that does not validate is ignored: the router keeps the split it had.
    split_file.write_text('{"routes": [{"model": "linear", "canary_percent": 250}]}')
    _send(url, 20)
    still = _split(url)
    assert still is not None and still["canary_percent"] == 30

    # A new weight in place: same rollout, its figures carry on.
    moved = _apply(url, split_file, [route.model_copy(update={"canary_percent": 100.0})], 100.0)
    assert moved is not None and moved["canary"]["requests"] >= after["canary"]["requests"]
    assert set(_send(url, 50)) == {200}
    full = _split(url)
    assert full is not None and full["canary"]["requests"] - moved["canary"]["requests"] == 50

    # Removed: every request to the baseline again, and no split left.
    assert _apply(url, split_file, [], None) is None
    assert set(_send(url, 50)) == {200}
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert (
        "# TYPE modelfleet_router_version_requests_total counter" in metrics
        and 'role="canary"' not in metrics
    )


def test_shadow_mirrors_compares_and_returns_only_the_baseline(setup: tuple[str, Path, Upstream]) -> None:
    url, split_file, canary = setup
    route = CanaryRoute(
        model="linear", baseline_version="1", canary_version="2", canary_percent=0, shadow_percent=100,
        upstreams=[canary],
    )  # fmt: skip
    _apply(url, split_file, [route], 0)
    with httpx.Client(timeout=10) as client:
        answers = [client.post(f"{url}/v2/models/linear/infer", json=infer_body()).json() for _ in range(60)]
    baseline_scores = answers[0]["outputs"][0]["data"]
    assert all(answer["outputs"][0]["data"] == baseline_scores for answer in answers)  # never the canary's
    for _ in range(50):
        split = _split(url)
        assert split is not None
        if split["shadow"]["compared"] >= 50:
            break
        time.sleep(0.05)
    shadow = split["shadow"]
    assert shadow["mirrored"] == 60 and shadow["failed"] == 0 and shadow["compared"] >= 50
    assert shadow["cosine_mean"] is not None and -1.0 <= shadow["cosine_min"] <= shadow["cosine_mean"] < 0.999
    assert split["canary"]["requests"] == 0  # mirrored copies are not canary traffic
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    sample = 'modelfleet_router_version_requests_total{code="200",fleet="split",model="linear",role="baseline",version="1"}'
    assert sample in metrics
    _apply(url, split_file, [], None)
