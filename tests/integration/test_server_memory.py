"""What a loaded model adds to the server's resident memory: at most 1.5 × its ONNX file with ONNX
Runtime's weight prepacking off (`prepack_weights: false`, for memory-bound nodes), and within the fleet
planner's factor (fleet/sizing.py ARTIFACT_MEMORY_FACTOR) with it on, the default."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from tests.support.servers import serve

from modelfleet.build import BUNDLED_MODEL_NAME as MINILM
from modelfleet.fleet.sizing import ARTIFACT_MEMORY_FACTOR


def _settled_rss_bytes(pid: int) -> int:
    process = psutil.Process(pid)
    samples = []
    for _ in range(5):
        samples.append(process.memory_info().rss)
        time.sleep(0.1)
    return max(samples)


@pytest.mark.parametrize(("prepack", "factor"), [(False, 1.5), (True, ARTIFACT_MEMORY_FACTOR)])
def test_each_loaded_model_costs_at_most_its_factor_of_its_file(
    tmp_path: Path, iris_artifact: Path, minilm_fp32_artifact: Path, prepack: bool, factor: float
) -> None:
    body = {
        "inputs": [
            {"name": "text", "shape": [8], "datatype": "BYTES", "data": ["a sentence of a few words"] * 8}
        ]
    }
    spec = tmp_path / f"serve-{prepack}.yaml"
    models = [
        {"path": str(iris_artifact), "prepack_weights": prepack},
        {"path": str(minilm_fp32_artifact), "prepack_weights": prepack},
    ]
    spec.write_text(yaml.safe_dump({"models": models[:1]}), encoding="utf-8")
    with serve(["--spec", str(spec)], tmp_path) as small:
        baseline = _settled_rss_bytes(small.process.pid)
    spec.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    with serve(["--spec", str(spec)], tmp_path) as both:
        for _ in range(20):  # after real traffic, not only after loading
            assert (
                httpx.post(f"{both.url}/v2/models/{MINILM}/infer", json=body, timeout=30).status_code == 200
            )
        loaded = _settled_rss_bytes(both.process.pid)
    file_size = (minilm_fp32_artifact / "model.onnx").stat().st_size
    added = loaded - baseline
    figure = f"MiniLM (prepack_weights {prepack}) added {added / 2**20:.0f} MiB for a {file_size / 2**20:.0f} MiB file"
    print(figure)
    assert added <= factor * file_size, figure
