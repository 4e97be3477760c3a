"""A loaded model adds at most 1.5 × its ONNX file size to the server's resident memory."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
from tests.support.servers import serve

from modelfleet.build import BUNDLED_MODEL_NAME as MINILM


def _settled_rss_bytes(pid: int) -> int:
    process = psutil.Process(pid)
    samples = []
    for _ in range(5):
        samples.append(process.memory_info().rss)
        time.sleep(0.1)
    return max(samples)


def test_each_loaded_model_costs_at_most_one_and_a_half_times_its_file(
    tmp_path: Path, iris_artifact: Path, minilm_fp32_artifact: Path
) -> None:
    body = {
        "inputs": [
            {"name": "text", "shape": [8], "datatype": "BYTES", "data": ["a sentence of a few words"] * 8}
        ]
    }
    with serve(["--model", str(iris_artifact)], tmp_path) as small:
        baseline = _settled_rss_bytes(small.process.pid)
    with serve(["--model", str(iris_artifact), "--model", str(minilm_fp32_artifact)], tmp_path) as both:
        for _ in range(20):  # after real traffic, not only after loading
            assert (
                httpx.post(f"{both.url}/v2/models/{MINILM}/infer", json=body, timeout=30).status_code == 200
            )
        loaded = _settled_rss_bytes(both.process.pid)
    file_size = (minilm_fp32_artifact / "model.onnx").stat().st_size
    added = loaded - baseline
    print(f"MiniLM added {added / 2**20:.0f} MiB for a {file_size / 2**20:.0f} MiB file")
    assert added <= 1.5 * file_size, (
        f"MiniLM added {added / 2**20:.0f} MiB for a {file_size / 2**20:.0f} MiB file"
    )
