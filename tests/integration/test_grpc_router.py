"""The fleet router's gRPC front with tritonclient.grpc unchanged: forwarding to real servers' gRPC ports,
least-outstanding spread, the router's own answers, and the retry when a replica goes away."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tests.support.ports import port_from_file
from tests.support.servers import MODELFLEET, RunningServer, serve, stop, wait_for
from tritonclient.utils import InferenceServerException

from modelfleet.fleet.router_config import RouterSettings, Upstream, write_router_settings

pytestmark = pytest.mark.timeout(120)
ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@dataclass
class GrpcFleet:
    servers: list[RunningServer]
    grpc_ports: list[int]
    router_url: str
    router_grpc: str

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.router_grpc)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[GrpcFleet]:
    folder = tmp_path_factory.mktemp("grpc-fleet")
    with contextlib.ExitStack() as stack:
        servers, grpc_ports = [], []
        for index in range(2):
            port_file = folder / f"grpc-{index}"
            args = ["--model", str(iris_artifact), "--grpc-port", "0", "--grpc-port-file", str(port_file)]
            servers.append(stack.enter_context(serve(args, folder)))
            grpc_ports.append(int(port_file.read_text()))
        upstreams = [
            Upstream(
                name=f"g-{i}",
                group="g",
                url=server.url,
                models=["iris"],
                grpc_address=f"127.0.0.1:{grpc_ports[i]}",
            )
            for i, server in enumerate(servers)
        ]
        config = folder / "router.json"
        # Polls far apart: a replica that dies is found by the calls to it (and retried), not by a poll.
        settings = RouterSettings(
            fleet="grpc", port=0, grpc_port=0, upstreams=upstreams, health_interval_s=5.0
        )
        write_router_settings(settings, config)
        http_file, grpc_file = folder / "router.port", folder / "router.grpc-port"
        router = subprocess.Popen(
            [
                *MODELFLEET,
                "fleet",
                "router",
                str(config),
                "--port-file",
                str(http_file),
                "--grpc-port-file",
                str(grpc_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(stop, router)
        router_url = f"http://127.0.0.1:{port_from_file(http_file, router, what='router')}"
        wait_for(f"{router_url}/v2/health/ready")
        yield GrpcFleet(servers, grpc_ports, router_url, f"127.0.0.1:{int(grpc_file.read_text())}")


def _input(rows: np.ndarray = ROWS) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def _successes(server: RunningServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(r'^modelfleet_requests_total\{model="iris",outcome="success"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_infer_through_the_router_matches_a_server(fleet: GrpcFleet) -> None:
    direct = triton.InferenceServerClient(f"127.0.0.1:{fleet.grpc_ports[0]}")
    expected = direct.infer("iris", [_input()]).get_response()
    answer = fleet.client().infer("iris", [_input()], request_id="via-router").get_response()
    assert answer.id == "via-router"
    assert list(answer.raw_output_contents) == list(expected.raw_output_contents)
    assert [o.name for o in answer.outputs] == [o.name for o in expected.outputs]


def test_router_answers_and_forwards_metadata(fleet: GrpcFleet) -> None:
    client = fleet.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "modelfleet-router/grpc"
    assert client.is_model_ready("iris")
    assert client.get_model_metadata("iris").inputs[0].name == "input"
    assert client.get_model_config("iris").config.name == "iris"
    assert [(m.name, m.state) for m in client.get_model_repository_index().models] == [("iris", "READY")]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [_input()])
    assert caught.value.status() == "StatusCode.NOT_FOUND" and "not in fleet 'grpc'" in caught.value.message()
    with pytest.raises(InferenceServerException) as bad:  # the server's INVALID_ARGUMENT passes through
        client.infer("iris", [_input(np.zeros((1, 3), np.float32))])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT" and "shape [-1, 4]" in bad.value.message()


def test_requests_spread_over_both_replicas(fleet: GrpcFleet) -> None:
    before = [_successes(server) for server in fleet.servers]
    client = fleet.client()
    for _ in range(20):
        client.infer("iris", [_input()])
    gained = [_successes(server) - start for server, start in zip(fleet.servers, before, strict=True)]
    assert sum(gained) == 20 and min(gained) >= 5, gained


def test_a_replica_that_goes_away_is_retried_on_the_other(fleet: GrpcFleet) -> None:
    """Last in the module: it stops a server."""
    gone = fleet.servers[1].process
    gone.send_signal(signal.SIGKILL)
    gone.wait(timeout=10)
    client = fleet.client()
    retries_before = httpx.get(f"{fleet.router_url}/fleet/status", timeout=10).json()["models"]["iris"][
        "retries"
    ]
    for _ in range(6):  # no poll yet: a call to the dead replica fails to connect and is retried
        assert client.infer("iris", [_input()]).as_numpy("probabilities") is not None
    iris = httpx.get(f"{fleet.router_url}/fleet/status", timeout=10).json()["models"]["iris"]
    assert iris["retries"] == retries_before + 1  # once: the failed call marked it not ready
    assert iris["ready_replicas"] == 1
