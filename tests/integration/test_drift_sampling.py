"""A real server samples iris traffic: the drift endpoint and /metrics show the window, the capture holds the
items and never the API key, and the fleet's drift monitor judges the replica's window from the endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from tests.support.servers import RunningServer, serve

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.capture import capture_files, read_captured
from modelfleet.drift.monitor import DriftMonitor, Replica, history_file, read_history
from modelfleet.drift.types import DriftAssessment
from modelfleet.operate.events import read_events
from modelfleet.security.keys import KeyStore

REQUESTS = 30
ITEMS_PER_REQUEST = 4
DRIFT = {
    "sample_rate": 1.0,
    "window_items": 500,
    "min_window_items": 50,
    "check_interval_s": 60,
    "capture": {"enabled": True, "flush_interval_s": 0.1},
    "reference": {"source": "file"},
}


@dataclass
class Sampled:
    server: RunningServer
    infer_key: str
    read_key: str
    capture_dir: Path
    drift: DriftConfig


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[Sampled]:
    from sklearn.datasets import load_iris

    folder = tmp_path_factory.mktemp("drift")
    features, _ = load_iris(return_X_y=True)
    np.savetxt(folder / "reference.csv", features, delimiter=",", header="a,b,c,d", comments="")
    store = KeyStore(folder / "keys.json")
    infer_key = store.create("client", ["infer:iris"], actor="test").key
    read_key = store.create("monitor", ["read"], actor="test").key
    drift = {
        **DRIFT,
        "capture": {**DRIFT["capture"], "dir": str(folder / "capture")},
        "reference": {"source": "file", "path": str(folder / "reference.csv")},
    }
    spec = {
        "auth": {"enabled": True, "keys_file": str(folder / "keys.json")},
        "models": [{"path": str(iris_artifact), "drift": drift}],
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(folder / "serve.yaml")], folder) as server:
        # Traffic from a shifted distribution: petal length (feature 2) 2 cm longer than the reference's.
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {infer_key}"}) as client:
            for _ in range(REQUESTS):
                rows = features[rng.choice(len(features), ITEMS_PER_REQUEST)] + [0.0, 0.0, 2.0, 0.0]
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": [ITEMS_PER_REQUEST, 4],
                            "data": rows.ravel().tolist(),
                        }
                    ]
                }
                assert client.post("/v2/models/iris/infer", json=body).status_code == 200
        yield Sampled(server, infer_key, read_key, folder / "capture", DriftConfig.model_validate(drift))


def test_drift_endpoint_and_metrics_show_the_window(sampled: Sampled) -> None:
    url = f"{sampled.server.url}/v2/models/iris/drift"
    assert httpx.get(url).status_code == 401  # the window is served data: a key with `read` is needed
    document = httpx.get(url, headers={"Authorization": f"Bearer {sampled.read_key}"}, timeout=30).json()
    items = REQUESTS * ITEMS_PER_REQUEST
    assert document["window_items"] == items and document["requests_sampled"] == REQUESTS
    assert (
        len(document["window"]["inputs"]["input"]) == items
        and len(document["window"]["outputs"]["label"]) == items
    )
    assert document["reference"] == {"source": "file", "items": 150, "ready": True, "note": ""}
    assessment = document["assessment"]
    assert assessment["judged"] and assessment["drifted"]
    assert "input:input[2]" in {f["name"] for f in assessment["findings"] if f["drifted"]}
    metrics = httpx.get(
        f"{sampled.server.url}/metrics", headers={"Authorization": f"Bearer {sampled.read_key}"}
    ).text
    assert f'modelfleet_drift_window_items{{model="iris"}} {float(items)}' in metrics
    assert 'modelfleet_drift_detected{model="iris"} 1.0' in metrics
    assert 'modelfleet_drift_p_value{feature="input:input[2]",model="iris",test="ks"}' in metrics


def test_capture_has_the_items_and_never_the_key(sampled: Sampled) -> None:
    deadline = time.monotonic() + 10
    while (
        len(list(read_captured(sampled.capture_dir))) < REQUESTS * ITEMS_PER_REQUEST
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    items = list(read_captured(sampled.capture_dir))
    assert len(items) == REQUESTS * ITEMS_PER_REQUEST
    assert all(
        item.model == "iris" and len(item.inputs["input"]) == 4 and item.outputs["label"] in (0, 1, 2)
        for item in items
    )
    raw = b"".join(path.read_bytes() for path in capture_files(sampled.capture_dir))
    assert sampled.infer_key.encode() not in raw and b"Bearer" not in raw and b"uthorization" not in raw


def test_monitor_judges_the_replicas_window(sampled: Sampled, tmp_path: Path) -> None:
    heard: list[DriftAssessment] = []

    class Listener:
        def on_assessment(self, assessment: DriftAssessment) -> None:
            heard.append(assessment)

    async def rounds() -> tuple[list[DriftAssessment], list[DriftAssessment]]:
        headers = {"Authorization": f"Bearer {sampled.read_key}"}
        async with httpx.AsyncClient(headers=headers) as client:
            replicas = [Replica("cpu-0-1", sampled.server.url, ("iris",))]
            monitor = DriftMonitor(
                "f", {"iris": sampled.drift}, lambda: replicas, tmp_path, tmp_path / "events.jsonl", client
            )
            monitor.add_listener(Listener())
            return await monitor.poll_once(0.0), await monitor.poll_once(1.0)

    first, second = asyncio.run(rounds())
    assert second == []  # not due again before check_interval_s
    assert heard == first and len(first) == 1
    assessment = first[0]
    assert assessment.judged and assessment.drifted and assessment.version == 1
    assert assessment.window_items == REQUESTS * ITEMS_PER_REQUEST and assessment.reference_items == 150
    assert assessment.details["replicas"] == ["cpu-0-1"]
    assert [h["drifted"] for h in read_history(history_file(tmp_path, "iris"))] == [True]
    events, _ = read_events(tmp_path / "events.jsonl")
    assert [(e.kind, e.status, e.model) for e in events] == [("drift_detected", "firing", "iris")]
