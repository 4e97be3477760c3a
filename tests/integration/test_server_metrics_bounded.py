"""A real server: made-up model names leave /metrics the same size, and models warm up before ready."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import yaml
from tests.support.servers import serve

IRIS_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{series} not in /metrics"
    return float(match[1])


def test_random_model_names_leave_metrics_unchanged_and_warm_up_ran(
    iris_artifact: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "serve.yaml"
    spec.write_text(yaml.safe_dump({"models": [{"path": str(iris_artifact), "warmup_runs": 3}]}))
    with serve(["--spec", str(spec)], tmp_path) as server:
        before = _metrics(server.url)
        # Warm-up went through the batcher before ready, and is kept out of the client figures.
        assert _value(before, 'modelfleet_model_warmup_runs_total{model="iris"}') == 3
        assert _value(before, 'modelfleet_compute_duration_seconds_count{model="iris"}') == 0
        with httpx.Client(base_url=server.url, timeout=10) as client:
            statuses = set()
            for _ in range(150):
                name = uuid.uuid4().hex
                statuses.add(client.post(f"/v2/models/{name}/infer", json=IRIS_BODY).status_code)
                statuses.add(client.post(f"/v2/models/{name}/infer", content=b"{not json").status_code)
                statuses.add(client.get(f"/v2/models/{name}/ready").status_code)
            statuses.add(client.post(f"/v2/models/{'n' * 20_000}/infer", content=b"[").status_code)
            assert client.post("/v2/models/iris/infer", json=IRIS_BODY).status_code == 200
        assert statuses <= {400, 404, 414, 431}, statuses
        after = _metrics(server.url)
    assert _value(after, 'modelfleet_requests_total{model="unknown",outcome="not_found"}') >= 150
    assert _value(after, 'modelfleet_requests_total{model="unknown",outcome="bad_request"}') >= 150
    assert _value(after, 'modelfleet_compute_duration_seconds_count{model="iris"}') == 1
    assert {m for m in re.findall(r'model="([^"]*)"', after)} == {"iris", "unknown"}
    # Same series: only counter values and process figures changed.
    assert len(after.splitlines()) == len(before.splitlines())
    assert abs(len(after) - len(before)) < 400
