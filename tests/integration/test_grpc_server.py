"""V2 gRPC on a real server's second port, called with tritonclient.grpc unchanged: the iris model and a
tiny text classifier, REST and gRPC sharing one batcher, error mapping, auth and TLS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.servers import RunningServer, serve
from tritonclient.utils import InferenceServerException

from modelfleet.security.keys import KeyStore
from modelfleet.security.tls import generate_self_signed

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@dataclass
class GrpcServer:
    server: RunningServer
    grpc_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _serve_grpc(args: list[str], folder: Path) -> Iterator[GrpcServer]:
    port_file = folder / "grpc-port"
    with serve([*args, "--grpc-port", "0", "--grpc-port-file", str(port_file)], folder) as server:
        yield GrpcServer(server, int(port_file.read_text()))


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path, sentiment_head_artifact: Path
) -> Iterator[GrpcServer]:
    folder = tmp_path_factory.mktemp("grpc")
    spec = {
        "server": {"max_tensor_bytes": 4096},
        "models": [
            {"path": str(iris_artifact), "batching": {"max_items_per_request": 8}},
            {"path": str(sentiment_head_artifact)},
        ],
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    yield from _serve_grpc(["--spec", str(folder / "serve.yaml")], folder)


@pytest.fixture(scope="module")
def client(plain: GrpcServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(plain.address)


def _fp32(rows: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def _texts(texts: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object))
    return tensor


def test_health_metadata_config_and_index(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):  # as REST's 404
        client.is_model_ready("nope")
    assert client.get_server_metadata(as_json=True)["name"] == "modelfleet"
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = client.get_model_config("iris", as_json=True)["config"]
    assert config["name"] == "iris" and config["input"][0]["data_type"] == "TYPE_FP32"
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted((m["name"], m["state"]) for m in index) == [("iris", "READY"), ("sentiment", "READY")]
    stats = client.get_inference_statistics("iris", as_json=True)["model_stats"]
    assert [s["name"] for s in stats] == ["iris"]


def test_grpc_and_rest_give_the_same_iris_answer(
    client: triton.InferenceServerClient, plain: GrpcServer
) -> None:
    result = client.infer("iris", [_fp32(ROWS)], request_id="r-1")
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    rest = httpx.post(f"{plain.server.url}/v2/models/iris/infer", json=body, timeout=30).json()
    assert result.get_response().id == "r-1"
    for output in rest["outputs"]:
        grpc_array = result.as_numpy(output["name"])
        assert list(grpc_array.shape) == output["shape"]
        np.testing.assert_allclose(grpc_array.ravel(), np.asarray(output["data"], dtype=grpc_array.dtype))


def test_bytes_in_and_out_through_raw_contents(client: triton.InferenceServerClient) -> None:
    texts = [b"A wonderful, moving film.", b"Dull.", "caf\u00e9 \u2615".encode()]
    result = client.infer("sentiment", [_texts(texts)], outputs=[triton.InferRequestedOutput("label")])
    labels = result.as_numpy("label")
    assert labels.shape == (3,) and set(labels) <= {b"negative", b"positive"}
    assert result.as_numpy("probabilities") is None  # only what was asked for


def test_typed_contents_are_accepted_as_well_as_raw(
    plain: GrpcServer, client: triton.InferenceServerClient
) -> None:
    from modelfleet.protocol.grpc import grpc_service_pb2 as pb
    from modelfleet.protocol.grpc import grpc_service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
        ROWS.ravel()
    )
    with grpc.insecure_channel(plain.address) as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    raw = client.infer("iris", [_fp32(ROWS)]).get_response()
    assert list(answer.raw_output_contents) == list(raw.raw_output_contents)


@pytest.mark.parametrize(
    ("model", "rows", "code", "fragment"),
    [
        ("nope", ROWS, grpc.StatusCode.NOT_FOUND, "nope"),
        ("iris", np.zeros((2, 3), np.float32), grpc.StatusCode.INVALID_ARGUMENT, "must have shape [-1, 4]"),
        (
            "iris",
            np.zeros((9, 4), np.float32),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batching.max_items_per_request",
        ),
        ("iris", np.zeros((8, 4), np.float64), grpc.StatusCode.INVALID_ARGUMENT, "must be FP32"),
        (
            "iris",
            np.zeros((300, 4), np.float32),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "server.max_tensor_bytes",
        ),
    ],
)
def test_errors_map_to_grpc_status_codes(
    client: triton.InferenceServerClient, model: str, rows: np.ndarray, code: grpc.StatusCode, fragment: str
) -> None:
    tensor = triton.InferInput("input", list(rows.shape), "FP32" if rows.dtype == np.float32 else "FP64")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor])
    assert caught.value.status() == f"StatusCode.{code.name}"
    assert fragment in caught.value.message()


def test_one_batcher_for_both_protocols(client: triton.InferenceServerClient, plain: GrpcServer) -> None:
    def batches() -> float:
        text = httpx.get(f"{plain.server.url}/metrics", timeout=10).text
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("modelfleet_batch_size_count{") and 'model="iris"' in line
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = batches()
    client.infer("iris", [_fp32(ROWS)])
    deadline = time.monotonic() + 5
    while batches() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches() == before + 1


def test_deadline_is_passed_to_the_data_plane(client: triton.InferenceServerClient) -> None:
    # gRPC checks a deadline on a timer, so with a 1 µs deadline the server's answer can come first: a
    # fast iris result now and then (once in a fresh-clone run), or the data plane's refusal of a request
    # it cannot finish by that deadline (UNAVAILABLE naming it). What may never happen is another error.
    outcomes = []
    for _ in range(5):
        try:
            client.infer("iris", [_fp32(ROWS)], client_timeout=1e-6)
            outcomes.append("OK")
        except InferenceServerException as exc:
            status = str(exc.status())
            if status == "StatusCode.UNAVAILABLE":
                assert "deadline" in str(exc.message()), exc.message()
            outcomes.append(status)
    assert set(outcomes) - {"OK"}, outcomes
    assert set(outcomes) <= {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE", "OK"}, outcomes


def test_grpc_health_service_reports_serving(plain: GrpcServer) -> None:
    with grpc.insecure_channel(plain.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            # Health mirrors readiness every HEALTH_INTERVAL_S: a server just ready over HTTP may lag by that.
            deadline = time.monotonic() + 10
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            while reply.status != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.1)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class SecureGrpc:
    grpc: GrpcServer
    cert: Path
    infer_iris: str
    read: str


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[SecureGrpc]:
    folder = tmp_path_factory.mktemp("grpc-secure")
    store = KeyStore(folder / "keys.json")
    infer_iris = store.create("client", ["infer:iris"], actor="test").key
    read = store.create("dashboard", ["read"], actor="test").key
    cert, key = folder / "cert.pem", folder / "key.pem"
    generate_self_signed(cert, key)
    spec = {
        "auth": {"enabled": True, "keys_file": str(folder / "keys.json")},
        "models": [{"path": str(iris_artifact)}],
    }
    (folder / "serve.yaml").write_text(yaml.safe_dump(spec))
    args = ["--spec", str(folder / "serve.yaml"), "--tls-cert", str(cert), "--tls-key", str(key)]
    for server in _serve_grpc(args, folder):
        yield SecureGrpc(server, cert, infer_iris, read)


def test_tls_and_keys_in_metadata(secure: SecureGrpc) -> None:
    client = triton.InferenceServerClient(
        f"localhost:{secure.grpc.grpc_port}", ssl=True, root_certificates=str(secure.cert)
    )
    assert client.is_server_live()  # health needs no key, as over REST
    with pytest.raises(InferenceServerException) as missing:
        client.infer("iris", [_fp32(ROWS)])
    assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as wrong_scope:
        client.infer("iris", [_fp32(ROWS)], headers={"x-api-key": secure.read})
    assert wrong_scope.value.status() == "StatusCode.PERMISSION_DENIED"
    result = client.infer("iris", [_fp32(ROWS)], headers={"authorization": f"Bearer {secure.infer_iris}"})
    assert result.as_numpy("label") is not None or result.get_response().outputs
    assert client.get_model_metadata("iris", headers={"x-api-key": secure.read}).name == "iris"
    plain_client = triton.InferenceServerClient(f"127.0.0.1:{secure.grpc.grpc_port}")
    with pytest.raises(InferenceServerException):
        plain_client.is_server_live(client_timeout=5)  # no plaintext beside TLS


def test_bench_protocol_grpc_against_the_server(plain: GrpcServer) -> None:
    from modelfleet.bench import run_bench
    from modelfleet.bench.options import spec_from_sources

    target = f"grpc://{plain.address}"
    smoke = run_bench(
        spec_from_sources(
            None,
            {
                "protocol": "grpc",
                "target": target,
                "models": ["iris", "sentiment"],
                "mode": "seq",
                "repeat": 2,
            },
            {},
        )
    )
    assert smoke.run.protocol == "grpc"
    assert [(e.name, e.sent, e.ok) for e in smoke.points[0].endpoints] == [
        ("iris", 2, 2),
        ("sentiment", 2, 2),
    ]
    load = run_bench(
        spec_from_sources(
            None,
            {
                "protocol": "grpc",
                "target": target,
                "models": ["iris"],
                "concurrency": "4",
                "duration_s": 0.5,
                "warmup_s": 0.1,
            },
            {},
        )
    )
    point = load.points[0]
    assert point.errors == {} and point.ok == point.sent > 10


def test_repository_unload_and_load(client: triton.InferenceServerClient) -> None:
    """After the tests that use `sentiment`: it is unloaded and loaded again from the spec."""
    with pytest.raises(InferenceServerException) as inline:
        client.load_model("sentiment", files={"file:1/model.onnx": b"\0"})
    assert inline.value.status() == "StatusCode.INVALID_ARGUMENT" and "bytes_param" in inline.value.message()
    client.unload_model("sentiment")
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("sentiment")
    client.load_model("sentiment")
    assert client.is_model_ready("sentiment")
    labels = client.infer("sentiment", [_texts([b"Fine."])]).as_numpy("label")
    assert labels is not None and labels.shape == (1,)
