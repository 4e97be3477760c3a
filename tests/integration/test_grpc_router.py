"""V2 gRPC through a real local fleet (`fleet up` with `router.grpc_port`) with tritonclient.grpc unchanged:
forwarding, least-outstanding spread over two replicas, the router's own answers and auth checks, and
the retry when a replica goes away."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tests.support.fleet_specs import write_fleet_spec
from tritonclient.utils import InferenceServerException

from modelfleet.fleet.local import start_fleet, stop_fleet
from modelfleet.fleet.router_config import read_router_settings
from modelfleet.fleet.state import FleetPaths, FleetState, read_state
from modelfleet.security.keys import KeyStore

pytestmark = pytest.mark.timeout(180)
ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@dataclass
class GrpcFleet:
    state: FleetState
    router_grpc: str
    replica_grpc: list[str]
    infer_key: str
    read_key: str

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(self.router_grpc)

    def infer_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.infer_key}"}

    def status(self) -> dict[str, object]:
        reply = httpx.get(
            f"{self.state.router_url}/fleet/status", headers={"x-api-key": self.read_key}, timeout=10
        )
        return dict(reply.json())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, iris_artifact: Path) -> Iterator[GrpcFleet]:
    folder = tmp_path_factory.mktemp("grpc-fleet")
    store = KeyStore(folder / "keys.json")
    infer_key = store.create("client", ["infer:iris"], actor="test").key
    read_key = store.create("status", ["read"], actor="test").key
    spec_file = write_fleet_spec(
        folder / "fleet.yaml",
        {"iris": iris_artifact},
        pools=[{"name": "cpu", "replicas": 2, "resources": {"memory_mib": 1024}}],
        # Polls far apart: a replica that dies is found by the calls to it (and retried), not by a poll.
        router={"grpc_port": 0, "health_interval_s": 5.0},
        auth={"enabled": True, "keys_file": str(folder / "keys.json")},
    )
    state_root = folder / "state"
    start_fleet(spec_file, state_root=state_root, wait_s=120)
    try:
        paths = FleetPaths.for_fleet("testfleet", state_root)
        settings = read_router_settings(paths.router_file)
        yield GrpcFleet(
            read_state(paths),
            f"127.0.0.1:{settings.grpc_port}",
            [str(upstream.grpc_address) for upstream in settings.upstreams],
            infer_key,
            read_key,
        )
    finally:
        stop_fleet(spec_file, state_root, grace_s=5)


def _input(rows: np.ndarray = ROWS) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def _successes(url: str, key: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"x-api-key": key}, timeout=10).text
    match = re.search(r'^modelfleet_requests_total\{model="iris",outcome="success"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_infer_through_the_router_matches_a_replica(fleet: GrpcFleet) -> None:
    direct = triton.InferenceServerClient(fleet.replica_grpc[0])
    expected = direct.infer("iris", [_input()], headers=fleet.infer_headers()).get_response()
    answer = fleet.client().infer("iris", [_input()], request_id="via-router", headers=fleet.infer_headers())
    assert answer.get_response().id == "via-router"
    assert list(answer.get_response().raw_output_contents) == list(expected.raw_output_contents)


def test_router_answers_forwards_and_checks_keys(fleet: GrpcFleet) -> None:
    client, read = fleet.client(), {"x-api-key": fleet.read_key}
    assert client.is_server_live() and client.is_server_ready()  # probes need no key
    assert client.get_server_metadata(headers=read).name == "modelfleet-router/testfleet"
    assert client.is_model_ready("iris", headers=read)
    assert client.get_model_metadata("iris", headers=read).inputs[0].name == "input"
    assert client.get_model_config("iris", headers=read).config.name == "iris"
    index = client.get_model_repository_index(headers=read).models
    assert [(m.name, m.state) for m in index] == [("iris", "READY")]
    cases = [
        (lambda: client.get_server_metadata(), "UNAUTHENTICATED"),  # the router's own answer
        (lambda: client.infer("iris", [_input()]), "UNAUTHENTICATED"),  # the server's, passed through
        (lambda: client.infer("iris", [_input()], headers=read), "PERMISSION_DENIED"),
        # An unknown model is checked as the server would check it first: no answer tells what exists.
        (lambda: client.infer("nope", [_input()]), "UNAUTHENTICATED"),
        (lambda: client.infer("nope", [_input()], headers=fleet.infer_headers()), "PERMISSION_DENIED"),
        (lambda: client.get_model_metadata("nope", headers=read), "NOT_FOUND"),
        (
            lambda: client.infer(
                "iris", [_input(np.zeros((1, 3), np.float32))], headers=fleet.infer_headers()
            ),
            "INVALID_ARGUMENT",
        ),
    ]
    for call, code in cases:
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == f"StatusCode.{code}", caught.value.message()


def test_requests_spread_over_both_replicas(fleet: GrpcFleet) -> None:
    servers = [p.url for p in fleet.state.processes if p.kind == "server"]
    before = [_successes(url, fleet.read_key) for url in servers]
    client = fleet.client()
    for _ in range(20):
        client.infer("iris", [_input()], headers=fleet.infer_headers())
    gained = [_successes(url, fleet.read_key) - start for url, start in zip(servers, before, strict=True)]
    assert sum(gained) == 20 and min(gained) >= 5, gained


def test_a_replica_that_goes_away_is_retried_on_the_other(fleet: GrpcFleet) -> None:
    """Last in the module: it kills a replica (the supervisor starts it again, after this test's calls)."""
    victim = next(p for p in fleet.state.processes if p.kind == "server" and p.id.endswith("-1"))
    retries_before = fleet.status()["models"]["iris"]["retries"]  # type: ignore[index]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    client = fleet.client()
    for _ in range(6):  # no poll yet: a call to the dead replica fails to connect and is retried
        assert (
            client.infer("iris", [_input()], headers=fleet.infer_headers()).as_numpy("probabilities")
            is not None
        )
    iris = fleet.status()["models"]["iris"]  # type: ignore[index]
    assert iris["retries"] == retries_before + 1  # type: ignore[index]  # once: that call marked it not ready
