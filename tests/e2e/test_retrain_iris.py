"""Retraining end to end with the iris example on a real local fleet (supervisor, router, a server reading a
real registry) and `modelfleet retrain` in a subprocess:

v1 (trained on iris) serves traffic from a shifted distribution, which it mostly gets wrong; the served
items are captured; a run whose hook deliberately trains a worse model is rejected by the accuracy gate
and v1 keeps serving; a run with the good hook passes the gates, a rollout promotes v2, traffic is then
served by v2, and `registry history` / `registry show` name v1, the trigger and the window.

The capture files are written here from the answers the fleet gave (what the servers' capture writes,
drift/types.py CapturedItem lines); the drift trigger itself is unit-tested in tests/unit/test_retrain_triggers.py.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.e2e.test_cli_fleet import run
from tests.support.fleet_specs import write_fleet_spec

from modelfleet.fleet.local import start_fleet, stop_fleet
from modelfleet.fleet.state import FleetPaths
from modelfleet.operate.events import read_events
from modelfleet.registry import Registry

pytestmark = pytest.mark.timeout(180)
EXAMPLE_HOOK = Path(__file__).resolve().parents[2] / "examples" / "retrain_iris.py"
SHIFT = np.array([1.0, -0.5, 1.8, 0.9])  # moves classes 0 and 1 towards where v1 sees class 2


def _shifted_iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(labels))
    return np.round(features[order] + SHIFT, 2), labels[order]


def _body(rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    data = [float(v) for v in rows.reshape(-1)]
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": data}]}


class Traffic:
    """One closed-loop client sending shifted rows, so a rollout's steps have requests to judge."""

    def __init__(self, url: str, rows: np.ndarray[Any, Any]) -> None:
        self.url, self.rows = url, rows
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=8.0) as client:
            while not self._stop.is_set():
                response = client.post(self.url, json=_body(self.rows[:5]))
                if response.status_code == 200:
                    self.versions.append(str(response.json().get("model_version")))
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("retrain")
    registry = Registry(root / "registry")
    v1 = registry.add(iris_artifact, actor="test")
    registry.promote(v1.ref, actor="test", reason="first")
    features, labels = _shifted_iris()
    labels_file = root / "labels.jsonl"
    labels_file.write_text(
        "".join(
            json.dumps({"inputs": {"input": row.tolist()}, "label": int(y)}) + "\n"
            for row, y in zip(features, labels, strict=True)
        ),
        encoding="utf-8",
    )
    retrain = {
        "command": [sys.executable, str(EXAMPLE_HOOK)],
        "labels": "labels.jsonl",
        "timeout_s": 60,
        "min_window_items": 100,
        "holdout_fraction": 0.3,
        "gates": {"p99_slack_ms": 50, "latency_runs": 20},
        "rollout": {
            "canary_percent": 100,
            "steps_percent": [100],
            "interval_s": 0.4,
            "gates": {
                "min_requests": 5,
                "check_interval_s": 0.1,
                "p99_slack_ms": 500,
                "promote_timeout_s": 30,
            },
        },
    }
    model = {"name": "iris", "ref": "iris@production", "warmup_runs": 1, "retrain": retrain}
    spec_file = write_fleet_spec(root / "fleet.yaml", {}, models=[model])
    state_root = root / "state"
    env = {**os.environ, "MODELFLEET_REGISTRY": str(registry.root), "MODELFLEET_STATE_DIR": str(state_root)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODELFLEET_REGISTRY", str(registry.root))
        state = start_fleet(spec_file, state_root=state_root, wait_s=60)
        try:
            yield {
                "spec": spec_file,
                "paths": FleetPaths.for_fleet("testfleet", state_root),
                "url": f"{state.router_url}/v2/models/iris/infer",
                "env": env,
                "registry": registry,
                "features": features,
                "labels": labels,
            }
        finally:
            stop_fleet(spec_file, state_root)


def _serve_and_capture(fleet: dict[str, Any]) -> float:
    """Send every shifted row through the router, write what was served as capture lines; v1's accuracy."""
    features, labels = fleet["features"], fleet["labels"]
    folder = fleet["paths"].capture_dir / "iris"
    folder.mkdir(parents=True, exist_ok=True)
    lines, predicted = [], []
    with httpx.Client(timeout=10.0) as client:
        for start in range(0, len(features), 10):
            rows = features[start : start + 10]
            answer = client.post(fleet["url"], json=_body(rows)).json()
            served = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
            predicted.extend(served)
            for row, label in zip(rows, served, strict=True):
                item = {
                    "at": time.time(),
                    "model": "iris",
                    "version": int(answer["model_version"]),
                    "inputs": {"input": [float(np.float32(v)) for v in row]},
                    "outputs": {"label": label},
                }
                lines.append(json.dumps(item) + "\n")
    (folder / "capture-000001.jsonl").write_text("".join(lines), encoding="utf-8")
    return float(np.mean(np.array(predicted) == labels))


def test_worse_model_is_rejected_then_retrained_model_is_rolled_out(fleet: dict[str, Any]) -> None:
    v1_accuracy = _serve_and_capture(fleet)
    assert v1_accuracy < 0.8  # the shift really hurts v1, so a retrained model has room to win

    worse = run(
        "retrain", str(fleet["spec"]), "iris", "--json", env={**fleet["env"], "RETRAIN_IRIS_WORSE": "1"}
    )
    assert worse.returncode == 1, worse.stderr
    record = json.loads(worse.stdout)
    assert record["outcome"] == "rejected" and record["new_version"] == 2
    assert "gate failed: accuracy" in record["reason"]
    assert fleet["registry"].get("iris@production").version == 1  # v1 keeps serving
    with httpx.Client(timeout=10.0) as client:
        assert client.post(fleet["url"], json=_body(fleet["features"][:3])).json()["model_version"] == "1"

    with Traffic(fleet["url"], fleet["features"]) as traffic:
        good = run("retrain", str(fleet["spec"]), "iris", "--json", env=fleet["env"])
        assert good.returncode == 0, good.stderr
        record = json.loads(good.stdout)
        assert record["outcome"] == "promoted", record["reason"]
        assert record["new_version"] == 3 and record["parent_version"] == 1 and record["rollout"]
        deadline = time.monotonic() + 10
        while traffic.versions[-1:] != ["3"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert traffic.versions[-1] == "3"  # the router now serves v3 from the fleet's own replica
    accuracy = next(g for g in record["gates"] if g["name"] == "accuracy")
    assert accuracy["candidate"] > accuracy["current"]
    assert [step["step"] for step in record["steps"]] == [
        "snapshot",
        "hook",
        "build",
        "register",
        "gates",
        "promote",
    ]

    v3 = fleet["registry"].get("iris:3")
    assert v3.aliases == ["production"] and v3.lineage.parent_version == 1
    assert v3.lineage.retraining is not None and v3.lineage.retraining.trigger["kind"] == "manual"
    assert v3.lineage.retraining.window["sha256"] == record["window"]["sha256"]
    assert v3.lineage.retraining.hook_exit_code == 0

    history = run("registry", "history", "iris", env=fleet["env"])
    assert history.returncode == 0, history.stderr
    text = " ".join(history.stdout.split())
    assert (
        f"retraining {record['id']} (manual: modelfleet retrain) from version 1: promoted → version 3" in text
    )
    assert f"sha256 {record['window']['sha256']}" in text and "rejected" in text

    events = [e for e in read_events(fleet["paths"].events_file)[0] if e.kind == "retraining"]
    outcomes = [e.details.get("outcome") for e in events if "outcome" in e.details]
    assert outcomes == ["rejected", "promoted"]
