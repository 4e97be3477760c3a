"""Overload, deadlines, body limits, graceful shutdown and worker processes, on a real server."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
import pytest
import tritonclient.http as triton
import yaml
from tests.support.servers import RunningServer, serve
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
                # 16-item requests on batches of 2: over the default of 4 × max_batch_size items per request
                "batching": {"max_batch_size": 2, "max_delay_s": 0, "max_items_per_request": 16},
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
    # Six 8-item requests of long texts at once are a queue of ~6 long runs, far past the default latency
    # target (they would be refused: docs/serve.md, Overload and admission); this test is about draining
    # what was admitted, so the model gets a queue-wait target of 10 s.
    spec = {
        "models": [
            {"path": str(minilm_fp32_artifact), "batching": {"max_batch_size": 8, "max_queue_wait_s": 10.0}}
        ]
    }
    spec_file = tmp_path / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], tmp_path) as server:
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
        success_lines = [
            line
            for line in metrics.splitlines()
            if line.startswith('modelfleet_requests_total{model="iris",outcome="success"}')
        ]
        assert len(success_lines) == 1, "one series, summed over the workers' files"
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


# -- limits on what a client controls -----------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, minilm_fp32_artifact: Path) -> Iterator[RunningServer]:
    """MiniLM with short head/idle timeouts and a small connection limit, so abuse tests run quickly."""
    folder = tmp_path_factory.mktemp("guarded")
    spec = {
        "server": {"header_timeout_s": 1.0, "keep_alive_timeout_s": 1.0, "max_connections": 16},
        "models": [
            {"path": str(minilm_fp32_artifact), "batching": {"max_batch_size": 8, "max_delay_s": 0.02}}
        ],
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(folder / "serve.yaml")], folder) as server:
        yield server


def _text(data: object, shape: list[int] | None = None, **tensor: object) -> dict[str, object]:
    length = len(data) if isinstance(data, list) else 1
    return {
        "inputs": [{"name": "text", "shape": shape or [length], "datatype": "BYTES", "data": data, **tensor}]
    }


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (_text([300000000]), 400, "must be strings"),
        (_text([["a"], "b"], [2]), 400, "input 'text'"),
        (_text([[1], 2], [2]), 400, "input 'text'"),
        (_text([], [1, 0, 9223372036854775807]), 400, "server.max_tensor_bytes"),
        (_text(["x" * (2 * 1024 * 1024)]), 413, "server.max_element_bytes"),
        (_text([""] * 100_000), 400, "model batching.max_items_per_request"),
        (
            {**_text(["a"]), "outputs": [{"name": "embedding", "parameters": [1]}]},
            400,
            "'parameters' must be an object",
        ),
        ({**_text(["a"]), "parameters": {"binary_data_output": "yes"}}, 400, "binary_data_output"),
    ],
)
def test_hostile_bodies_get_a_4xx_naming_the_limit(
    guarded: RunningServer, body: dict[str, object], status: int, names: str
) -> None:
    started = time.perf_counter()
    response = httpx.post(f"{guarded.url}/v2/models/{MINILM}/infer", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]
    assert time.perf_counter() - started < 5.0, "refused at once, not after running the model"
    assert "Traceback" not in guarded.log()


def test_a_long_text_is_cut_to_what_the_tokenizer_keeps(guarded: RunningServer) -> None:
    url = f"{guarded.url}/v2/models/{MINILM}/infer"
    long_text = " ".join(
        f"word{i} of a long document," for i in range(30_000)
    )  # ~0.9 MB, far over 256 tokens
    head = long_text[:2_500]  # holds more than 256 tokens: all the model keeps of the long text
    response = httpx.post(url, json=_text([long_text, head]), timeout=30)
    assert response.status_code == 200, response.text
    embedding = np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    np.testing.assert_allclose(embedding[0], embedding[1], atol=1e-5)
    # a text that holds too few words to be cut exactly is refused, alone
    spaces = " " * 5000 + "word " * 300
    refused = httpx.post(url, json=_text(["ok", spaces]), timeout=30)
    assert refused.status_code == 400 and "max_length_tokens" in refused.json()["error"]


def test_a_bad_request_fails_alone_among_its_batch_partners(guarded: RunningServer) -> None:
    url = f"{guarded.url}/v2/models/{MINILM}/infer"
    raw = b"\x02\x00\x00\x00\xff\xfe"  # one BYTES element that is not UTF-8, binary extension
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=12)) as client:
            good = [client.post(url, json=_text([LONG_TEXT])) for _ in range(10)]
            bad = client.post(
                url, content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))}
            )
            *answers, refused = await asyncio.gather(*good[:5], *good[5:], bad)
            return answers, refused

    answers, refused = asyncio.run(scenario())
    assert [r.status_code for r in answers] == [200] * 10
    assert refused.status_code == 400 and "not UTF-8" in refused.json()["error"]


def _raw(server: RunningServer, payload: bytes, wait_s: float = 10.0) -> tuple[bytes, float]:
    """Send `payload` on a fresh connection; return all the server sent before it closed, and when."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.perf_counter() - started


def _status_and_error(received: bytes) -> tuple[int, str]:
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)["error"]


def test_request_heads_are_bounded_in_size_count_and_time(guarded: RunningServer) -> None:
    cases = [
        (
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_000_000 + b"\r\n\r\n",
            431,
            "server.max_header_bytes",
        ),
        (b"GET /v2/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "server.max_url_bytes"),
        (
            b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
            431,
            "server.max_headers",
        ),
        (b"\x00\x01 not http\r\n\r\n", 400, "invalid HTTP"),
    ]
    for payload, status, names in cases:
        received, _ = _raw(guarded, payload)
        got_status, error = _status_and_error(received)
        assert got_status == status and names in error, received[:300]
    # a head that never completes: 408 after header_timeout_s (1 s here), then closed
    received, elapsed_s = _raw(guarded, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    assert _status_and_error(received)[0] == 408 and "server.header_timeout_s" in received.decode()
    assert 0.8 < elapsed_s < 5.0
    # an idle keep-alive connection is closed after keep_alive_timeout_s (1 s here)
    received, elapsed_s = _raw(guarded, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200") and 0.8 < elapsed_s < 5.0
    assert httpx.get(f"{guarded.url}/v2/health/ready").status_code == 200


def test_connections_over_the_limit_get_a_json_503(guarded: RunningServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(16)]
    try:
        time.sleep(0.2)
        received, _ = _raw(guarded, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, error = _status_and_error(received)
        assert status == 503 and "server.max_connections" in error
        assert b"retry-after: 1" in received.lower()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{guarded.url}/v2/health/live").status_code == 200


def test_numeric_inputs_need_numbers_of_their_kind(tmp_path: Path, iris_artifact: Path) -> None:
    spec = {
        "models": [
            {"path": str(iris_artifact), "batching": {"max_batch_size": 4, "max_items_per_request": 6}}
        ]
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(tmp_path / "serve.yaml")], tmp_path) as server:
        url = f"{server.url}/v2/models/iris/infer"

        def infer(shape: list[int], data: object) -> httpx.Response:
            return httpx.post(
                url, json={"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]}
            )

        assert infer([1, 4], [[5.1, 3.5, 1.4, 0.2]]).status_code == 200
        for shape, data, names in [
            ([1, 4], [True, 3.5, 1.4, 0.2], "found true/false"),
            ([1, 4], [[5.1, 3.5], [1.4, 0.2]], "does not match shape"),
            ([1, 4], ["5.1", 3.5, 1.4, 0.2], "found a string"),
            ([1, 4], [1e39, 3.5, 1.4, 0.2], "out of the range of FP32"),
            (
                [7, 4],
                [0.5] * 28,
                "over the limit of 6 items per request (model batching.max_items_per_request)",
            ),
        ]:
            response = infer(shape, data)
            assert response.status_code == 400 and names in response.json()["error"], response.text
        assert "Traceback" not in server.log()
