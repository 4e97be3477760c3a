"""Overload, deadlines, body limits, graceful shutdown and worker processes, on a real server."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton
import yaml
from tests.serving import serve
from tritonclient.utils import InferenceServerException

from modelfleet.build import BUNDLED_MODEL_NAME as MINILM

LONG_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)


def _text_body(count: int) -> dict[str, object]:
    return {"inputs": [{"name": "text", "shape": [count], "datatype": "BYTES", "data": [LONG_TEXT] * count}]}


async def _burst(url: str, count: int, body: dict[str, object]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(*(client.post(url, json=body) for _ in range(count)))


def test_overload_answers_503_with_retry_after_and_server_stays_up(
    tmp_path: Path, minilm_fp32_artifact: Path
) -> None:
    args = [
        "--model",
        str(minilm_fp32_artifact),
        "--max-batch-size",
        "4",
        "--max-queue-items",
        "8",
        "--max-delay-s",
        "0",
    ]
    with serve(args, tmp_path) as server:
        url = f"{server.url}/v2/models/{MINILM}/infer"
        responses = asyncio.run(_burst(url, 24, _text_body(4)))
        statuses = [r.status_code for r in responses]
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert int(refused.headers["retry-after"]) >= 1
        assert "overloaded" in refused.json()["error"]
        # the server recovers at once
        assert httpx.post(url, json=_text_body(1), timeout=30).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'modelfleet_requests_total{{model="{MINILM}",outcome="overloaded"}}' in metrics


def test_deadline_gives_504(tmp_path: Path, minilm_fp32_artifact: Path) -> None:
    spec = {
        "models": [
            {
                "path": str(minilm_fp32_artifact),
                "timeout_s": 0.05,
                "batching": {"max_batch_size": 2, "max_delay_s": 0},
            }
        ],
    }
    spec_file = tmp_path / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], tmp_path) as server:
        url = f"{server.url}/v2/models/{MINILM}/infer"
        responses = asyncio.run(_burst(url, 8, _text_body(16)))
        timed_out = [r for r in responses if r.status_code == 504]
        assert timed_out, [r.status_code for r in responses]
        assert "deadline" in timed_out[0].json()["error"]
        # A client's own `timeout` parameter (microseconds, as tritonclient sends it) is honoured too.
        client = triton.InferenceServerClient(server.address)
        tensor = triton.InferInput("text", [16], "BYTES")
        tensor.set_data_from_numpy(np.array([LONG_TEXT.encode()] * 16, dtype=object))
        with pytest.raises(InferenceServerException, match="deadline"):
            client.infer(MINILM, [tensor], timeout=1000)


def test_body_over_the_limit_gets_413(tmp_path: Path, iris_artifact: Path) -> None:
    spec = {"server": {"max_body_bytes": 4096}, "models": [{"path": str(iris_artifact)}]}
    spec_file = tmp_path / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], tmp_path) as server:
        rows = [[1.0, 2.0, 3.0, 4.0]] * 400
        response = httpx.post(
            f"{server.url}/v2/models/iris/infer",
            json={"inputs": [{"name": "input", "shape": [400, 4], "datatype": "FP32", "data": rows}]},
        )
        assert response.status_code == 413
        assert "over the limit" in response.json()["error"]
        small = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=small).status_code == 200


def test_sigterm_turns_readiness_off_finishes_in_flight_requests_and_exits_zero(
    tmp_path: Path, minilm_fp32_artifact: Path
) -> None:
    with serve(["--model", str(minilm_fp32_artifact), "--max-batch-size", "8"], tmp_path) as server:
        url = f"{server.url}/v2/models/{MINILM}/infer"

        async def scenario() -> tuple[list[httpx.Response], int]:
            async with httpx.AsyncClient(timeout=60) as client:
                in_flight = [asyncio.ensure_future(client.post(url, json=_text_body(8))) for _ in range(6)]
                await asyncio.sleep(0.3)  # requests are queued or running
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.05)
                try:
                    ready = (await client.get(f"{server.url}/v2/health/ready")).status_code
                except httpx.TransportError:
                    ready = -1  # listener already closed: also not ready
                return list(await asyncio.gather(*in_flight)), ready

        responses, ready_status = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * 6
        assert ready_status != 200
        assert server.process.wait(timeout=30) == 0


def test_workers_share_one_port(tmp_path: Path, iris_artifact: Path) -> None:
    with serve(["--model", str(iris_artifact), "--workers", "2"], tmp_path) as server:
        body = {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
        }
        deadline = time.monotonic() + 30
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                # new connections are spread over the workers by the kernel (SO_REUSEPORT)
                response = httpx.post(f"{server.url}/v2/models/iris/infer", json=body)
                assert response.status_code == 200
                metrics = client.get(f"{server.url}/metrics").text
                served = sum(
                    float(line.split()[-1])
                    for line in metrics.splitlines()
                    if line.startswith('modelfleet_requests_total{model="iris",outcome="success"}')
                )
                if served >= 20:
                    break
        assert served >= 20, "metrics from every worker are merged into one exposition"
        pids = {line for line in metrics.splitlines() if line.startswith("modelfleet_model_ready")}
        assert pids
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


def _worker_processes(pid: int) -> list[psutil.Process]:
    # multiprocessing's resource tracker is a child too; workers run spawn_main
    return [child for child in psutil.Process(pid).children() if "spawn_main" in " ".join(child.cmdline())]


def test_a_killed_worker_is_restarted_and_readiness_waits_for_it(tmp_path: Path, iris_artifact: Path) -> None:
    with serve(["--model", str(iris_artifact), "--workers", "2"], tmp_path) as server:
        workers = _worker_processes(server.process.pid)
        assert len(workers) == 2
        workers[0].kill()
        statuses: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses.append(httpx.get(f"{server.url}/v2/health/ready").status_code)
            if 503 in statuses and statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert 503 in statuses, "a pod with a dead worker is not ready"
        assert statuses[-1] == 200, "the supervisor restarted the worker and the pod is ready again"
        replacement = {child.pid for child in _worker_processes(server.process.pid)}
        assert workers[0].pid not in replacement and len(replacement) == 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
