"""Many models on one server: names on one artifact share one session; a memory budget loads models on
their first request and evicts to stay within it; a full cold-load queue answers 503 + Retry-After.

One real server for the module, with a budget smaller than any model (one artifact resident at a time):
`twin-1` and `twin-2` are one iris artifact (one content, one session), `solo` is the same file opened
with other ONNX Runtime threads, so a session of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support.servers import RunningServer, serve

IRIS_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
# Enough warm-up runs that a cold load lasts long enough for concurrent requests to pile up behind it.
SLOW_WARMUP_RUNS = 300


@pytest.fixture(scope="module")
def server(iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("many-models")
    model = {"path": str(iris_artifact), "warmup_runs": SLOW_WARMUP_RUNS}
    spec = {
        "models": [
            {**model, "name": "twin-1", "intra_op_threads": 1},
            {**model, "name": "twin-2", "intra_op_threads": 1},
            {**model, "name": "solo", "intra_op_threads": 2},
        ],
        "residency": {"memory_budget_bytes": 1, "max_cold_requests": 1},
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(folder / "serve.yaml")], folder) as running:
        yield running


def _infer(server: RunningServer, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{name}/infer", json=IRIS_BODY, timeout=30)


def _index(server: RunningServer) -> dict[str, tuple[str, str]]:
    entries = httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()
    return {entry["name"]: (entry["state"], entry["reason"]) for entry in entries}


def _metric(server: RunningServer, series: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def test_ready_with_every_lazy_model_registered_and_none_loaded(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    index = _index(server)
    assert set(index) == {"twin-1", "twin-2", "solo"}
    for state, reason in index.values():
        assert state == "UNAVAILABLE" and "not loaded (lazy)" in reason
    metadata = httpx.get(f"{server.url}/v2/models/solo").json()  # answered from the manifest
    assert metadata["inputs"][0]["name"] == "input" and metadata["parameters"]["state"] == "UNAVAILABLE"
    assert _metric(server, "modelfleet_resident_sessions") == 0
    assert _metric(server, "modelfleet_memory_budget_bytes") == 1


def test_two_names_on_one_artifact_share_one_session(server: RunningServer) -> None:
    assert _infer(server, "twin-1").status_code == 200
    one_name_bytes = _metric(server, "modelfleet_resident_model_bytes")
    assert one_name_bytes > 0
    assert _infer(server, "twin-2").status_code == 200
    index = _index(server)
    assert index["twin-1"][0] == index["twin-2"][0] == "READY"
    assert _metric(server, "modelfleet_resident_sessions") == 1
    # The second name adds no measured memory: it runs on the first one's session.
    assert _metric(server, "modelfleet_resident_model_bytes") == one_name_bytes
    assert _metric(server, 'modelfleet_model_loads_total{model="twin-2"}') >= 1


def test_a_budget_of_one_model_evicts_the_other_and_both_still_answer(server: RunningServer) -> None:
    assert _infer(server, "twin-1").status_code == 200
    twin_evictions = _metric(server, 'modelfleet_model_evictions_total{model="twin-1"}')
    solo = _infer(server, "solo")
    assert solo.status_code == 200 and solo.json()["model_name"] == "solo"
    index = _index(server)
    assert index["solo"] == ("READY", "")
    assert index["twin-1"][0] == index["twin-2"][0] == "UNAVAILABLE"
    assert "not loaded (lazy)" in index["twin-1"][1]
    assert _metric(server, 'modelfleet_model_evictions_total{model="twin-1"}') == twin_evictions + 1
    assert _metric(server, "modelfleet_resident_sessions") == 1
    assert _metric(server, "modelfleet_residency_age_seconds_count") >= 1
    assert _metric(server, "modelfleet_cold_load_duration_seconds_count") >= 2

    assert _infer(server, "twin-1").status_code == 200  # and back: solo goes
    assert _index(server)["solo"][0] == "UNAVAILABLE"
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # unloaded lazy models are servable


def test_a_full_cold_load_queue_answers_503_with_retry_after(server: RunningServer) -> None:
    assert _infer(server, "twin-1").status_code == 200  # solo is not loaded now

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=12)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/solo/infer", json=IRIS_BODY) for _ in range(12))
            )

    responses = asyncio.run(burst())
    statuses = sorted(response.status_code for response in responses)
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) == {200, 503}
    refused = next(response for response in responses if response.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert "residency.max_cold_requests" in refused.json()["error"]
    assert _metric(server, "modelfleet_cold_requests_refused_total") >= 1


@pytest.fixture(scope="module")
def queued_loads(iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One load at a time and room for several cold requests: `slow` takes a while to warm, `other`
    (its own session) queues for the load slot behind it."""
    folder = tmp_path_factory.mktemp("queued-loads")
    spec = {
        "models": [
            {
                "path": str(iris_artifact),
                "name": "slow",
                "intra_op_threads": 1,
                "warmup_runs": 6 * SLOW_WARMUP_RUNS,
            },
            {"path": str(iris_artifact), "name": "other", "intra_op_threads": 2},
        ],
        "residency": {"memory_budget_bytes": 1, "max_cold_requests": 8, "max_concurrent_loads": 1},
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(folder / "serve.yaml")], folder) as running:
        yield running


def test_a_cold_request_gets_504_at_its_deadline_and_a_load_nobody_waits_for_is_not_started(
    queued_loads: RunningServer,
) -> None:
    server = queued_loads

    async def scenario() -> tuple[httpx.Response, httpx.Response, float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            slow = asyncio.ensure_future(client.post("/v2/models/slow/infer", json=IRIS_BODY))
            await asyncio.sleep(0.05)  # slow's load holds the one load slot
            started = asyncio.get_running_loop().time()
            other = await client.post(
                "/v2/models/other/infer", json=IRIS_BODY, headers={"X-Request-Timeout-Ms": "100"}
            )
            waited_s = asyncio.get_running_loop().time() - started
            return await slow, other, waited_s

    slow, other, waited_s = asyncio.run(scenario())
    assert slow.status_code == 200
    assert other.status_code == 504, other.text
    assert "deadline" in other.json()["error"] and "residency.max_concurrent_loads" in other.json()["error"]
    assert waited_s < 2.0  # answered at its 100 ms deadline, not when the slot came free
    # When the slot came free nobody waited for `other` any more: it was not loaded, `slow` stays.
    assert _metric(server, "modelfleet_cold_loads_abandoned_total") == 1
    index = _index(server)
    assert index["slow"][0] == "READY" and index["other"][0] == "UNAVAILABLE"
    assert _infer(server, "other").status_code == 200  # a later request loads it as usual
