"""The model server over real HTTP on 127.0.0.1, driven by tritonclient (binary, its default) and plain JSON."""

from __future__ import annotations

import concurrent.futures
import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
import yaml
from tests.support.servers import RunningServer, serve
from tritonclient.utils import InferenceServerException

from modelfleet.build import BUNDLED_MODEL_NAME as MINILM

SENTENCES = [
    b"A man is playing a guitar.",
    b"Someone plays the guitar.",
    b"The stock market fell sharply today.",
]
IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, minilm_fp32_artifact: Path, iris_artifact: Path
) -> Iterator[RunningServer]:
    # 16 closed-loop clients of one CPU model (below) are more than its default latency target admits at
    # once on a shared machine (docs/serve.md, Overload and admission); these tests are about the protocol
    # and batching, so MiniLM gets a queue-wait target of 10 s, as a throughput-oriented deployment would.
    folder = tmp_path_factory.mktemp("srv")
    spec = {
        "models": [
            {"path": str(minilm_fp32_artifact), "batching": {"max_queue_wait_s": 10.0}},
            {"path": str(iris_artifact)},
        ]
    }
    spec_file = folder / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], folder) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.address)


def _text_input(texts: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))
    return tensor


def _iris_input(rows: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelfleet"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_readiness(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(MINILM)
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert len(metadata["parameters"]["sha256"]) == 64
    assert client.is_model_ready(MINILM)
    assert client.is_model_ready("iris", metadata["versions"][0]) or client.is_model_ready("iris")
    index = {entry["name"]: entry["state"] for entry in client.get_model_repository_index()}
    assert index == {MINILM: "READY", "iris": "READY"}


def test_text_embeddings_binary_in_and_out(client: triton.InferenceServerClient) -> None:
    result = client.infer(MINILM, [_text_input(SENTENCES)])
    embeddings = result.as_numpy("embedding")
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    related, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert related > 0.6 > unrelated


def test_same_text_gives_same_embedding_alone_or_batched(client: triton.InferenceServerClient) -> None:
    alone = client.infer(MINILM, [_text_input([SENTENCES[2]])]).as_numpy("embedding")[0]
    batched = client.infer(MINILM, [_text_input(SENTENCES)]).as_numpy("embedding")[2]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_large_bodies_decode_exactly_json_and_binary(
    client: triton.InferenceServerClient, server: RunningServer
) -> None:
    # Past 64 KiB the server reads a body into one buffer of its declared size: the same rows must come
    # back whether the body was small or large, JSON or binary.
    rows = np.random.default_rng(0).uniform(0, 8, size=(128, 4)).astype(np.float32)  # 2 KiB binary
    small = client.infer("iris", [_iris_input(rows)]).as_numpy("probabilities")
    texts = [b"padding " * 2000 + sentence for sentence in SENTENCES]  # ~48 KiB of BYTES
    alone = client.infer(MINILM, [_text_input(texts)]).as_numpy("embedding")
    wide = texts * 2  # ~96 KiB: one buffer
    np.testing.assert_allclose(
        client.infer(MINILM, [_text_input(wide)]).as_numpy("embedding")[:3], alone, atol=1e-5
    )
    document = {
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}]
    }
    padded = orjson.dumps(document | {"id": "x" * 100_000})  # a JSON body of ~110 KiB
    response = httpx.post(f"{server.url}/v2/models/iris/infer", content=padded)
    assert response.status_code == 200, response.text
    probabilities = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")["data"]
    np.testing.assert_allclose(np.array(probabilities).reshape(small.shape), small, atol=1e-6)


def test_iris_json_and_binary_and_versioned_route(
    client: triton.InferenceServerClient, server: RunningServer
) -> None:
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities"),
    ]
    result = client.infer("iris", [_iris_input(IRIS_ROWS, binary=False)], outputs=outputs)
    assert result.as_numpy("label").tolist() == [0, 2]
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, atol=1e-5)
    version = client.get_model_metadata("iris")["versions"][0]
    versioned = client.infer("iris", [_iris_input(IRIS_ROWS)], model_version=version)
    assert versioned.as_numpy("label").tolist() == [0, 2]
    plain = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        json={
            "id": "r1",
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
        },
    )
    assert plain.status_code == 200
    body = plain.json()
    assert body["id"] == "r1" and body["model_name"] == "iris"
    assert {o["name"] for o in body["outputs"]} == {"label", "probabilities"}


def test_gzip_request_and_response(client: triton.InferenceServerClient, server: RunningServer) -> None:
    result = client.infer(
        MINILM,
        [_text_input(SENTENCES)],
        request_compression_algorithm="gzip",
        response_compression_algorithm="gzip",
    )
    assert result.as_numpy("embedding").shape == (3, 384)
    body = gzip.compress(b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}')
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200


def test_no_content_type_needed(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/{MINILM}/infer",
        content=b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["hello"]}]}',
        headers={"Content-Type": ""},
    )
    assert response.status_code == 200
    assert len(response.json()["outputs"][0]["data"]) == 384


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        (
            "/v2/models/nope/infer",
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}',
            404,
            "not served",
        ),
        (
            "/v2/models/iris/versions/99/infer",
            b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
            404,
            "version",
        ),
        ("/v2/models/iris/infer", b"{broken", 400, "not valid JSON"),
        (
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}',
            400,
            "shape [-1, 4]",
        ),
        (
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]}',
            400,
            "must be FP32",
        ),
        (
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"other","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
            400,
            "needs input 'input'",
        ),
        (
            "/v2/models/iris/infer",
            b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}',
            400,
            "no output",
        ),
        ("/v2/nowhere", b"", 404, "no route"),
    ],
)
def test_bad_requests_get_json_errors(
    server: RunningServer, path: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(f"{server.url}{path}", content=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]
    assert "Traceback" not in response.text


def test_tritonclient_sees_server_errors(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="not served"):
        client.infer("nope", [_iris_input(IRIS_ROWS)])


def test_metrics_count_requests_batches_and_latency(
    server: RunningServer, client: triton.InferenceServerClient
) -> None:
    client.infer("iris", [_iris_input(IRIS_ROWS)])
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        'modelfleet_requests_total{model="iris",outcome="success"}',
        'modelfleet_request_duration_seconds_bucket{le="0.005",model="iris"}',
        'modelfleet_queue_duration_seconds_count{model="iris"}',
        f'modelfleet_compute_duration_seconds_count{{model="{MINILM}"}}',
        'modelfleet_batch_size_count{model="iris"}',
        'modelfleet_queue_depth{model="iris"}',
        f'modelfleet_model_load_seconds{{model="{MINILM}"',
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert 'outcome="bad_request"' in text


def test_concurrent_clients_are_batched_and_each_gets_its_own_answer(server: RunningServer) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(48)]

    def one(text: str) -> list[float]:
        response = httpx.post(
            f"{server.url}/v2/models/{MINILM}/infer",
            json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]},
            timeout=30,
        )
        response.raise_for_status()
        return list(response.json()["outputs"][0]["data"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        concurrent_results = list(pool.map(one, texts))
    sequential = [one(text) for text in texts[:4]]
    np.testing.assert_allclose(concurrent_results[:4], sequential, atol=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").text
    count = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(f'modelfleet_batch_size_count{{model="{MINILM}"}}')
    )
    total = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(f'modelfleet_batch_size_sum{{model="{MINILM}"}}')
    )
    assert total / count > 1.0, "concurrent requests should share model runs"
