"""The serve core in process: V2App's routes over a DataPlane and a ModelRepository built directly, with
the SumModel test double, through the ASGI interface (lifespan included). No socket, no subprocess;
tests/integration/test_server_v2.py and friends keep the same routes covered end to end."""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tests.support.asgi import build, serving
from tests.support.sum_model import WIDTH, SumModel

from modelfleet.config.serve import ModelConfig
from modelfleet.errors import SpecError
from modelfleet.protocol.codec import DecodeLimits
from modelfleet.runtime.base import Model

pytestmark = pytest.mark.timeout(30)

ROWS = np.array([[1, 2, 3], [0.5, 0.25, 0.125]], dtype=np.float32)


def _body(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def _output(document: dict[str, Any], name: str) -> np.ndarray:
    (entry,) = [output for output in document["outputs"] if output["name"] == name]
    return np.asarray(entry["data"], dtype=np.float32).reshape(entry["shape"])


def _assert_error(response: httpx.Response, status: int, fragment: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    assert fragment in document["error"], document
    assert set(document) <= {"error", "retry_after_s"} and "Traceback" not in response.text
    return document


async def _wait_running(model: SumModel) -> None:
    assert await asyncio.to_thread(model.running.wait, 5), "no run started"


async def test_health_server_and_model_metadata_and_the_repository_index() -> None:
    model = SumModel()
    core = build([model], max_batch_size=8)
    async with serving(core) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        server = (await client.get("/v2")).json()
        assert server["name"] == "modelfleet" and "binary_tensor_data" in server["extensions"]
        for path in ("/v2/models/sum", "/v2/models/sum/versions/1"):
            metadata = (await client.get(path)).json()
            assert metadata == {
                "name": "sum",
                "versions": ["1"],
                "platform": "modelfleet_test",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, WIDTH]}],
                "outputs": [
                    {"name": "sum", "datatype": "FP32", "shape": [-1]},
                    {"name": "double", "datatype": "FP32", "shape": [-1, WIDTH]},
                ],
                "parameters": {"sha256": "5" * 64, "max_batch_size": 8, "state": "READY"},
            }
        model_ready = await client.get("/v2/models/sum/ready")
        assert (model_ready.status_code, model_ready.json()) == (200, {"name": "sum", "ready": True})
        index = (await client.post("/v2/repository/index", content=b"{}")).json()
        assert index == [{"name": "sum", "version": "1", "state": "READY", "reason": ""}]
        openapi = (await client.get("/openapi.json")).json()
        assert "/v2/models/sum/infer" in openapi["paths"]
    assert model.closed, "shutdown closes the models"


async def test_infer_json_answers_each_row_and_selects_outputs() -> None:
    core = build([SumModel()])
    async with serving(core) as client:
        response = await client.post("/v2/models/sum/infer", json=_body(ROWS, id="req-7"))
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        document = response.json()
        assert (document["model_name"], document["model_version"], document["id"]) == ("sum", "1", "req-7")
        np.testing.assert_array_equal(_output(document, "sum"), ROWS.sum(axis=1))
        np.testing.assert_array_equal(_output(document, "double"), ROWS * 2)
        only = await client.post(
            "/v2/models/sum/versions/1/infer", json=_body(ROWS, outputs=[{"name": "double"}])
        )
        assert [output["name"] for output in only.json()["outputs"]] == ["double"]
        # Large answers are compressed for a client that accepts it.
        many = np.ones((100, WIDTH), dtype=np.float32)
        zipped = await client.post(
            "/v2/models/sum/infer", json=_body(many), headers={"Accept-Encoding": "gzip"}
        )
        assert zipped.headers["content-encoding"] == "gzip"
        np.testing.assert_array_equal(_output(zipped.json(), "sum"), np.full(100, 3, np.float32))


async def test_infer_binary_as_tritonclient_encodes_it_in_and_out() -> None:
    rows = np.random.default_rng(3).random((5, WIDTH), dtype=np.float32)
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in ("sum", "double")]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    assert json_size is not None
    core = build([SumModel()])
    async with serving(core) as client:
        response = await client.post(
            "/v2/models/sum/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(json_size)},
        )
        assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
        header_length = int(response.headers["inference-header-content-length"])
        result = triton.InferenceServerClient.parse_response_body(
            response.content, header_length=header_length
        )
        np.testing.assert_array_equal(result.as_numpy("sum"), rows.sum(axis=1, dtype=np.float32))
        np.testing.assert_array_equal(result.as_numpy("double"), rows * 2)
        # A gzip-compressed request body decodes to the same request.
        zipped = await client.post(
            "/v2/models/sum/infer",
            content=gzip.compress(bytes(body)),
            headers={"Inference-Header-Content-Length": str(json_size), "Content-Encoding": "gzip"},
        )
        assert zipped.content == response.content


_TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": [1, 2, 3]}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"),
    [
        ("POST", "/v2/models/sum/infer", b"{broken", {}, 400, "not valid JSON"),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [{**_TENSOR, "shape": [1, 2], "data": [1, 2]}]},
            {},
            400,
            "shape [-1, 3]",
        ),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [{**_TENSOR, "datatype": "FP64"}]},
            {},
            400,
            "must be FP32",
        ),
        ("POST", "/v2/models/sum/infer", {"inputs": [{**_TENSOR, "name": "y"}]}, {}, 400, "needs input 'x'"),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [_TENSOR], "outputs": [{"name": "nope"}]},
            {},
            400,
            "has no output 'nope'",
        ),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [{**_TENSOR, "shape": [129, WIDTH], "data": [1.0] * 129 * WIDTH}]},
            {},
            400,
            "model batching.max_items_per_request",
        ),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [{**_TENSOR, "data": [1, -2, 3]}]},
            {},
            400,
            "must not be negative",
        ),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [_TENSOR]},
            {"X-Request-Timeout-Ms": "soon"},
            400,
            "X-Request-Timeout-Ms",
        ),
        (
            "POST",
            "/v2/models/sum/infer",
            {"inputs": [_TENSOR]},
            {"Inference-Header-Content-Length": "ten"},
            400,
            "Inference-Header-Content-Length",
        ),
        ("POST", "/v2/models/sum/infer", b"{}", {"Content-Encoding": "br"}, 400, "use gzip or deflate"),
        ("GET", "/v2/models/sum/infer", b"", {}, 400, "use POST"),
        ("GET", "/v2/repository/models/sum/load", b"", {}, 400, "use POST"),
        ("POST", "/v2/models/nosuch/infer", {"inputs": [_TENSOR]}, {}, 404, "'nosuch' is not served"),
        ("GET", "/v2/models/nosuch", b"", {}, 404, "not served"),
        ("POST", "/v2/models/sum/versions/9/infer", {"inputs": [_TENSOR]}, {}, 404, "version '9'"),
        ("GET", "/v2/models/sum/everything", b"", {}, 404, "no route"),
        ("GET", "/v2/nowhere", b"", {}, 404, "no route"),
        ("GET", "/elsewhere", b"", {}, 404, "the API is under /v2"),
        ("POST", "/v2/repository/models/sum/unload", b"", {}, 404, "not enabled"),
        ("POST", "/v2/models/sum/infer", b"x" * 5000, {}, 413, "over the limit of 4096"),
        (
            "POST",
            "/v2/models/sum/infer",
            gzip.compress(b" " * 100_000),
            {"Content-Encoding": "gzip"},
            413,
            "decompressed request body is over the limit of 4096",
        ),
    ],
)
async def test_every_client_mistake_gets_its_status_and_a_json_error(
    method: str, path: str, body: bytes | dict[str, Any], headers: dict[str, str], status: int, fragment: str
) -> None:
    core = build([SumModel()], max_body_bytes=4096, decode_limits=DecodeLimits(max_tensor_bytes=16 * 1024))
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with serving(core) as client:
        response = await client.request(method, path, content=content, headers=headers)
        _assert_error(response, status, fragment)
        assert (await client.get("/v2/health/ready")).status_code == 200, "a client's mistake harms nothing"


async def test_the_tensor_limit_is_checked_from_the_shape_and_names_its_setting() -> None:
    rows = np.ones((2000, WIDTH), dtype=np.float32)  # 24,000 bytes decoded, over a 16 KiB limit
    tensor = triton.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    core = build([SumModel()], decode_limits=DecodeLimits(max_tensor_bytes=16 * 1024))
    async with serving(core) as client:
        response = await client.post(
            "/v2/models/sum/infer", content=body, headers={"Inference-Header-Content-Length": str(json_size)}
        )
        error = _assert_error(response, 413, "need 24000 bytes decoded")["error"]
        assert "over the limit of 16384 bytes (server.max_tensor_bytes)" in error


async def test_concurrent_requests_share_a_run_and_a_bad_one_fails_alone() -> None:
    model = SumModel()
    core = build([model], max_batch_size=32)
    async with serving(core) as client:
        model.gate.clear()
        first = asyncio.ensure_future(client.post("/v2/models/sum/infer", json=_body(ROWS[:1])))
        await _wait_running(model)  # the first run holds the model; the others queue behind it
        rows = [np.full((1 + index % 3, WIDTH), index, dtype=np.float32) for index in range(6)]
        bad = _body(ROWS[:1])
        bad["inputs"][0]["data"] = [1, -1, 1]
        calls = [client.post("/v2/models/sum/infer", json=_body(r)) for r in rows]
        queued = asyncio.gather(*calls, client.post("/v2/models/sum/infer", json=bad))
        await asyncio.sleep(0.2)  # every request reaches the queue (no I/O between, one event loop)
        model.gate.set()
        *answers, refused = await queued
        assert (await first).status_code == 200
    for r, answer in zip(rows, answers, strict=True):
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(_output(answer.json(), "sum"), r.sum(axis=1))
    _assert_error(refused, 400, "must not be negative")
    assert model.runs == [1, sum(len(r) for r in rows)], "the six good requests ran as one batch"


async def test_a_full_queue_answers_503_with_retry_after_s_and_the_rest_are_served() -> None:
    model = SumModel()
    core = build([model], max_batch_size=1, max_queue_items=1)
    async with serving(core) as client:
        model.gate.clear()
        running = asyncio.ensure_future(client.post("/v2/models/sum/infer", json=_body(ROWS[:1])))
        await _wait_running(model)
        # One of two queues (the limit is 1 item); the other is refused at once, whichever comes second.
        pair = asyncio.gather(*(client.post("/v2/models/sum/infer", json=_body(ROWS[:1])) for _ in range(2)))
        await asyncio.sleep(0.2)
        model.gate.set()
        answers = [await running, *await pair]
        metrics = (await client.get("/metrics")).text
    assert sorted(answer.status_code for answer in answers) == [200, 200, 503]
    (shed,) = [answer for answer in answers if answer.status_code == 503]
    document = _assert_error(shed, 503, "max_queue_items 1")
    assert document["retry_after_s"] > 0 and shed.headers["retry-after"] == "1"
    assert 'modelfleet_shed_requests_total{model="sum",reason="queue_full"} 1.0' in metrics
    assert 'modelfleet_requests_total{model="sum",outcome="overloaded"} 1.0' in metrics


async def test_a_request_past_its_deadline_gets_504() -> None:
    model = SumModel()
    core = build([model], timeout_s=0.05)
    async with serving(core) as client:
        model.gate.clear()
        late = await client.post("/v2/models/sum/infer", json=_body(ROWS))
        model.gate.set()
        _assert_error(late, 504, "deadline passed")
        # The client's own deadline header applies the same way, below the model's timeout_s.
        model.gate.clear()
        headers = {"X-Request-Timeout-Ms": "20"}
        short = await client.post("/v2/models/sum/infer", json=_body(ROWS), headers=headers)
        model.gate.set()
        _assert_error(short, 504, "deadline passed")
        metrics = (await client.get("/metrics")).text
    assert 'modelfleet_requests_total{model="sum",outcome="timeout"} 2.0' in metrics


async def test_names_that_are_not_served_count_under_unknown_never_as_a_label() -> None:
    core = build([SumModel()])
    async with serving(core) as client:
        await client.post("/v2/models/sum/infer", json=_body(ROWS))
        for name in ("made-up-1", "made-up-2"):
            await client.post(f"/v2/models/{name}/infer", json=_body(ROWS))
            await client.get(f"/v2/models/{name}")
        await client.post("/v2/models/sum/infer", content=b"{broken")
        text = (await client.get("/metrics")).text
    assert 'modelfleet_requests_total{model="unknown",outcome="not_found"} 4.0' in text
    assert 'modelfleet_requests_total{model="sum",outcome="success"} 1.0' in text
    assert 'modelfleet_requests_total{model="sum",outcome="bad_request"} 1.0' in text
    assert "made-up" not in text


async def test_while_models_load_readiness_is_503_and_unknown_names_are_retry_later() -> None:
    model = SumModel()
    opened = threading.Event()

    def slow_open(config: ModelConfig) -> Model:
        assert opened.wait(10)
        return model

    core = build([model], opener=slow_open)
    async with serving(core, wait_loaded=False) as client:
        try:
            ready = await client.get("/v2/health/ready")
            assert (ready.status_code, ready.json()) == (503, {"ready": False})
            waiting = await client.post("/v2/models/sum/infer", json=_body(ROWS))
            document = _assert_error(waiting, 503, "still loading its models")
            assert document["retry_after_s"] == 1.0 and waiting.headers["retry-after"] == "1"
            assert (await client.get("/v2/models/sum/ready")).status_code == 503
            index = (await client.get("/v2/repository/index")).json()
            assert [entry["state"] for entry in index] == ["LOADING"]
        finally:
            opened.set()
        await asyncio.wait_for(core.dataplane.wait_loaded(), 10)
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.post("/v2/models/sum/infer", json=_body(ROWS))).status_code == 200


async def test_a_model_that_fails_to_load_leaves_the_server_unready_and_its_name_not_found() -> None:
    def broken(config: ModelConfig) -> Model:
        raise SpecError("artifact sum: manifest.json is missing")

    core = build([SumModel()], opener=broken)
    async with serving(core) as client:
        assert core.dataplane.load_error is not None
        assert (await client.get("/v2/health/ready")).status_code == 503
        _assert_error(await client.post("/v2/models/sum/infer", json=_body(ROWS)), 404, "not served")
        metrics = (await client.get("/metrics")).text
    assert 'model="sum"' not in metrics, "a model that never loaded keeps no series"
