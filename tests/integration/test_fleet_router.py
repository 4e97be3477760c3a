"""The router against real model servers on loopback: routing, pass-through, errors, retries, metrics, auth."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tests.support.linear_model import infer_body, make_artifact
from tests.support.ports import refused_port
from tests.support.servers import start_router, start_server, stop, wait_for

from modelfleet.fleet.router_config import RouterSettings, Upstream, write_router_settings
from modelfleet.security.auth import MISSING_MESSAGE
from modelfleet.security.keys import KeyStore
from modelfleet.security.tls import client_ssl_context, generate_self_signed

pytestmark = pytest.mark.timeout(120)


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = [
            make_artifact(root / "alpha", "alpha", seed=1),
            make_artifact(root / "beta", "beta", seed=2),
        ]
        started = [start_server(self.artifacts, root) for _ in range(2)]
        self.servers = [process for process, _ in started]
        self.ports = [port for _, port in started]
        self.routers: list[object] = []

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def router(
        self,
        name: str,
        upstream_ports: list[int] | None = None,
        max_in_flight: int = 256,
        **settings: object,
    ) -> str:
        ports = self.ports if upstream_ports is None else upstream_ports
        config = self.root / f"router-{name}.json"
        upstreams = [
            Upstream(
                name=f"g-{i}",
                group="g",
                url=f"http://127.0.0.1:{p}",
                models=["alpha", "beta"],
                max_in_flight=max_in_flight,
            )
            for i, p in enumerate(ports)
        ]
        defaults: dict[str, object] = {"health_interval_s": 0.1}
        write_router_settings(
            RouterSettings(fleet="itest", port=0, upstreams=upstreams, **{**defaults, **settings}),  # type: ignore[arg-type]
            config,
        )
        process, port = start_router(config)
        self.routers.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/router/ready")
        return url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("router"))
    try:
        for index in range(2):
            wait_for(f"{fleet.url(index)}/v2/health/ready")
        yield fleet
    finally:
        for process in [*fleet.routers, *fleet.servers]:
            stop(process)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def router(fleet: Fleet) -> str:
    url = fleet.router("main")
    wait_for(f"{url}/v2/health/ready")
    return url


def test_routes_by_model_name_and_answers_like_the_server(fleet: Fleet, router: str) -> None:
    body = json.dumps(infer_body(rows=3)).encode()
    for model in ("alpha", "beta"):
        direct = httpx.post(f"{fleet.url(0)}/v2/models/{model}/infer", content=body)
        routed = httpx.post(f"{router}/v2/models/{model}/infer", content=body)
        assert routed.status_code == 200
        assert routed.json() == direct.json()
        assert routed.json()["model_name"] == model
    versioned = httpx.post(f"{router}/v2/models/alpha/versions/1/infer", content=body)
    assert versioned.status_code == 200
    metadata = httpx.get(f"{router}/v2/models/beta")
    assert metadata.status_code == 200 and metadata.json()["name"] == "beta"
    assert httpx.get(f"{router}/v2/models/alpha/ready").status_code == 200


def test_binary_extension_and_gzip_pass_through_untouched(fleet: Fleet, router: str) -> None:
    data = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
    results = {}
    for name, url in (("direct", fleet.url(0)), ("router", router)):
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        tensor = triton.InferInput("input", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=True)
        binary = client.infer(
            "alpha", [tensor], outputs=[triton.InferRequestedOutput("scores", binary_data=True)]
        )
        compressed = client.infer("alpha", [tensor], request_compression_algorithm="gzip")
        results[name] = (binary.as_numpy("scores"), compressed.as_numpy("scores"))
        client.close()
    np.testing.assert_array_equal(results["router"][0], results["direct"][0])
    np.testing.assert_array_equal(results["router"][1], results["direct"][1])
    # The exact bytes: a gzip body with its Content-Encoding reaches the server as sent.
    raw = gzip.compress(json.dumps(infer_body()).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    direct = httpx.post(f"{fleet.url(1)}/v2/models/beta/infer", content=raw, headers=headers)
    routed = httpx.post(f"{router}/v2/models/beta/infer", content=raw, headers=headers)
    assert (routed.status_code, routed.content) == (direct.status_code, direct.content)


def test_chunked_request_bodies_are_forwarded_whole(fleet: Fleet, router: str) -> None:
    body = json.dumps(infer_body(rows=4)).encode()

    def chunks() -> Iterator[bytes]:  # a generator body makes httpx send Transfer-Encoding: chunked
        for start in range(0, len(body), 17):
            yield body[start : start + 17]

    routed = httpx.post(f"{router}/v2/models/alpha/infer", content=chunks())
    direct = httpx.post(f"{fleet.url(0)}/v2/models/alpha/infer", content=body)
    assert routed.status_code == 200 and routed.json() == direct.json()


def test_errors_are_json_with_the_right_status(fleet: Fleet, router: str) -> None:
    unknown = httpx.post(f"{router}/v2/models/gamma/infer", content=b"{}")
    assert unknown.status_code == 404 and "not in fleet 'itest'" in unknown.json()["error"]
    assert httpx.get(f"{router}/nowhere").status_code == 404
    bad = httpx.post(f"{router}/v2/models/alpha/infer", content=b"{not json")
    direct_bad = httpx.post(f"{fleet.url(0)}/v2/models/alpha/infer", content=b"{not json")
    assert bad.status_code == direct_bad.status_code == 400
    assert bad.json() == direct_bad.json()


def test_health_metadata_index_metrics_and_status(router: str) -> None:
    assert httpx.get(f"{router}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{router}/v2/health/ready").status_code == 200
    assert httpx.get(f"{router}/v2").json()["name"] == "modelfleet-router/itest"
    index = httpx.post(f"{router}/v2/repository/index", content=b"{}").json()
    assert sorted(entry["name"] for entry in index) == ["alpha", "beta"]
    assert all(entry["state"] == "READY" for entry in index)
    httpx.post(f"{router}/v2/models/alpha/infer", json=infer_body())
    metrics = httpx.get(f"{router}/metrics").text
    assert 'modelfleet_router_requests_total{code="200",fleet="itest",model="alpha"}' in metrics
    assert 'modelfleet_router_ready_replicas{fleet="itest",model="alpha"} 2.0' in metrics
    assert "modelfleet_router_request_duration_seconds_bucket" in metrics
    status = httpx.get(f"{router}/fleet/status").json()
    assert status["ready"] is True
    assert status["models"]["alpha"]["requests"] >= 1
    assert status["models"]["alpha"]["p50_ms"] is not None


def test_load_is_spread_over_both_replicas(fleet: Fleet, router: str) -> None:
    def served(index: int) -> float:
        text = httpx.get(f"{fleet.url(index)}/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("modelfleet_requests_total") and 'model="beta"' in line
        )

    before = [served(0), served(1)]
    with httpx.Client() as client:
        for _ in range(20):
            assert client.post(f"{router}/v2/models/beta/infer", json=infer_body()).status_code == 200
    gained = [served(i) - before[i] for i in range(2)]
    assert sum(gained) == 20
    assert min(gained) >= 5  # idle replicas take turns


def test_keep_alive_pipelining_and_expect_continue_on_one_connection(router: str) -> None:
    port = int(router.rsplit(":", 1)[1])
    body = json.dumps(infer_body()).encode()
    request = (
        b"POST /v2/models/alpha/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + request)  # two pipelined requests in one write
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {received!r}"
            received += chunk
        expect = (
            b"POST /v2/models/beta/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(expect)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        final = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while b'"model_name":"beta"' not in final:
            chunk = sock.recv(65536)
            assert chunk
            final += chunk
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 400 Bad Request")  # then the router closes the connection


def test_body_over_the_limit_gets_413(fleet: Fleet) -> None:
    url = fleet.router("small-body", max_body_bytes=4096)
    response = httpx.post(f"{url}/v2/models/alpha/infer", content=b"x" * 10_000)
    assert response.status_code == 413
    assert "larger than 4096 bytes" in response.json()["error"]


def test_upstream_slower_than_the_deadline_gets_504_not_a_hang(fleet: Fleet) -> None:
    # A real server that holds every batch open for 300 ms, behind a router that waits 50 ms.
    slow, slow_port = start_server(
        fleet.artifacts,
        fleet.root,
        "--max-delay-s",
        "0.3",
        "--max-batch-size",
        "64",
        "--no-dispatch-when-idle",
    )
    try:
        wait_for(f"http://127.0.0.1:{slow_port}/v2/health/ready")
        url = fleet.router("slow", upstream_ports=[slow_port], request_timeout_s=0.05)
        wait_for(f"{url}/v2/health/ready")
        started = time.monotonic()
        response = httpx.post(f"{url}/v2/models/alpha/infer", json=infer_body(), timeout=5)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 504
        assert "within 0.05 s" in response.json()["error"]
    finally:
        stop(slow)


@pytest.fixture(scope="module")
def slow_port(fleet: Fleet) -> Iterator[int]:
    """A real server that holds every batch open for 300 ms."""
    slow, port = start_server(
        fleet.artifacts,
        fleet.root,
        "--max-delay-s",
        "0.3",
        "--max-batch-size",
        "64",
        "--no-dispatch-when-idle",
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/health/ready")
        yield port
    finally:
        stop(slow)


def test_saturated_replicas_shed_with_503_at_once_never_a_queue(fleet: Fleet, slow_port: int) -> None:
    url = fleet.router("saturated", upstream_ports=[slow_port], max_in_flight=2)
    wait_for(f"{url}/v2/health/ready")

    clients = [httpx.Client(timeout=5) for _ in range(8)]
    for client in clients:  # connected before the burst, so the burst measures the router only
        assert client.get(f"{url}/v2/health/live").status_code == 200

    def call(client: httpx.Client) -> tuple[int, float, httpx.Response]:
        started = time.monotonic()
        response = client.post(f"{url}/v2/models/alpha/infer", json=infer_body())
        return response.status_code, time.monotonic() - started, response

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, clients))
    for client in clients:
        client.close()
    ok = [r for r in results if r[0] == 200]
    shed = [r for r in results if r[0] == 503]
    assert len(ok) + len(shed) == 8 and 1 <= len(ok) <= 2, [r[0] for r in results]  # at most the limit
    # Refused at once: well before the slow server's 300 ms batch, which every admitted request waits for.
    assert max(elapsed for _, elapsed, _ in shed) < min(elapsed for _, elapsed, _ in ok), results
    assert shed[0][2].headers["Retry-After"] == "1"
    assert "max_in_flight_per_replica" in shed[0][2].json()["error"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'modelfleet_router_shed_total{fleet="itest",model="alpha",reason="saturated"}' in metrics


def test_the_clients_deadline_header_bounds_the_upstream_wait(fleet: Fleet, slow_port: int) -> None:
    url = fleet.router("deadline", upstream_ports=[slow_port], request_timeout_s=5)
    wait_for(f"{url}/v2/health/ready")
    started = time.monotonic()
    response = httpx.post(
        f"{url}/v2/models/alpha/infer", json=infer_body(), headers={"X-Request-Timeout-Ms": "50"}, timeout=5
    )
    assert time.monotonic() - started < 0.25
    # The server honours the same header, so either it or the router answers 504 first; both bound the wait.
    error = response.json()["error"]
    assert response.status_code == 504 and ("within 0.05 s" in error or "deadline passed" in error), error
    generous = httpx.post(
        f"{url}/v2/models/alpha/infer", json=infer_body(), headers={"X-Request-Timeout-Ms": "3000"}, timeout=5
    )
    assert generous.status_code == 200
    bad = httpx.post(
        f"{url}/v2/models/alpha/infer", json=infer_body(), headers={"X-Request-Timeout-Ms": "soon"}
    )
    assert bad.status_code == 400 and "X-Request-Timeout-Ms" in bad.json()["error"]


class Overloaded:
    """A real HTTP server that is ready but answers every inference 503 (an overloaded replica), with
    ``retry_after_s`` in its body when given (as a modelfleet server's admission control sends it)."""

    def __init__(self, retry_after_s: float | None = None, refusals: int | None = None) -> None:
        self.inferences = 0
        self.retry_after_s = retry_after_s
        self.refusals = refusals  # after this many 503s it answers 200 (None: never)
        self.answered_at: list[float] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(200, b'{"ready":true}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.inferences += 1
                outer.answered_at.append(time.monotonic())
                if outer.refusals is not None and outer.inferences > outer.refusals:
                    self._answer(200, b'{"model_name":"alpha","outputs":[]}')
                elif outer.retry_after_s is None:
                    self._answer(503, b'{"error":"overloaded"}')
                else:
                    body = {"error": "model alpha is overloaded", "retry_after_s": outer.retry_after_s}
                    self._answer(503, json.dumps(body).encode())

        return Handler


def test_a_503_from_an_overloaded_replica_is_retried_once_elsewhere(fleet: Fleet) -> None:
    overloaded = Overloaded()
    try:
        url = fleet.router("overloaded", upstream_ports=[overloaded.port, fleet.ports[0]])
        wait_for(f"{url}/v2/health/ready")
        statuses = [
            httpx.post(f"{url}/v2/models/alpha/infer", json=infer_body()).status_code for _ in range(10)
        ]
        retries = httpx.get(f"{url}/fleet/status").json()["models"]["alpha"]["retries"]
    finally:
        overloaded.server.shutdown()
    assert statuses == [200] * 10
    assert overloaded.inferences >= 1 and retries == overloaded.inferences


def test_without_retry_budget_a_503_is_passed_through_not_retried(fleet: Fleet) -> None:
    overloaded = Overloaded()
    try:
        url = fleet.router(
            "no-budget",
            upstream_ports=[overloaded.port, fleet.ports[0]],
            retry_budget_percent=0,
            retry_budget_min_per_s=0,
        )
        wait_for(f"{url}/v2/health/ready")
        responses = [httpx.post(f"{url}/v2/models/alpha/infer", json=infer_body()) for _ in range(10)]
        status = httpx.get(f"{url}/fleet/status").json()["models"]["alpha"]
    finally:
        overloaded.server.shutdown()
    passed_through = [r for r in responses if r.status_code == 503]
    assert len(passed_through) == overloaded.inferences >= 1
    assert passed_through[0].json() == {"error": "overloaded"}
    assert status["retries"] == 0


def test_a_replica_that_asks_for_a_retry_later_is_held_and_the_router_answers_for_it(fleet: Fleet) -> None:
    overloaded = Overloaded(retry_after_s=0.6)
    try:
        url = fleet.router("held", upstream_ports=[overloaded.port], retry_budget_percent=0)
        wait_for(f"{url}/v2/health/ready")
        with httpx.Client(timeout=5) as client:
            first = client.post(f"{url}/v2/models/alpha/infer", json=infer_body())
            started = time.monotonic()
            held = [client.post(f"{url}/v2/models/alpha/infer", json=infer_body()) for _ in range(10)]
            held_s = time.monotonic() - started
            forwarded_while_held = overloaded.inferences
            other_model = client.post(f"{url}/v2/models/beta/infer", json=infer_body())
            # A client deadline's refusal sets no hold: with the header every request is forwarded.
            time.sleep(0.7)
            deadline_header = {"X-Request-Timeout-Ms": "5000"}
            for _ in range(3):
                client.post(f"{url}/v2/models/alpha/infer", json=infer_body(), headers=deadline_header)
            forwarded_with_header = overloaded.inferences - forwarded_while_held - 1
            time.sleep(0.7)  # the hold is over: the replica is asked again
            client.post(f"{url}/v2/models/alpha/infer", json=infer_body())
            metrics = client.get(f"{url}/metrics").text
    finally:
        overloaded.server.shutdown()
    assert first.status_code == 503 and first.json()["retry_after_s"] == 0.6  # the replica's own answer
    assert held_s < 0.6, "the ten requests are answered within the hold"
    assert forwarded_while_held == 1, "a held replica is not sent the requests it said it would refuse"
    for response in held:
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        document = response.json()
        assert "overloaded" in document["error"] and "max_overload_hold_s" in document["error"]
        assert 0 < document["retry_after_s"] <= 0.6
    assert other_model.status_code == 503 and "every ready replica refused" not in other_model.text
    assert forwarded_with_header == 3
    assert overloaded.inferences == forwarded_while_held + 1 + 3 + 1
    assert 'modelfleet_router_shed_total{fleet="itest",model="alpha",reason="overloaded"} 10.0' in metrics


def test_with_a_replica_down_a_refused_request_waits_out_the_hold_and_is_sent_again(fleet: Fleet) -> None:
    # One replica down (a refused port: never ready), the other refuses twice, asking for 0.1 s each time.
    survivor = Overloaded(retry_after_s=0.1, refusals=2)
    with refused_port() as down:
        url = fleet.router("degraded", upstream_ports=[survivor.port, down])
        wait_for(f"{url}/v2/health/live")
        time.sleep(0.3)  # the first polls: the survivor ready, the other not
        with httpx.Client(timeout=5) as client:
            started = time.monotonic()
            answered = client.post(f"{url}/v2/models/alpha/infer", json=infer_body())
            elapsed_s = time.monotonic() - started
            retries = client.get(f"{url}/fleet/status").json()["models"]["alpha"]["retries"]
    survivor.server.shutdown()
    assert answered.status_code == 200, answered.text
    assert survivor.inferences == 3 and retries == 2  # two waits, each a retry of the budget
    gaps_s = [b - a for a, b in zip(survivor.answered_at, survivor.answered_at[1:], strict=False)]
    assert all(gap_s >= 0.09 for gap_s in gaps_s), gaps_s  # each resend waited for the hold to end
    assert elapsed_s < 2.0


@pytest.mark.parametrize("max_degraded_wait_s", [0.0, 0.35])
def test_a_degraded_wait_is_bounded_and_zero_turns_it_off(fleet: Fleet, max_degraded_wait_s: float) -> None:
    survivor = Overloaded(retry_after_s=0.1)  # refuses for ever
    with refused_port() as down:
        url = fleet.router(
            f"degraded-{max_degraded_wait_s:g}",
            upstream_ports=[survivor.port, down],
            max_degraded_wait_s=max_degraded_wait_s,
        )
        wait_for(f"{url}/v2/health/live")
        time.sleep(0.3)
        with httpx.Client(timeout=5) as client:
            started = time.monotonic()
            refused = client.post(f"{url}/v2/models/alpha/infer", json=infer_body())
            elapsed_s = time.monotonic() - started
    survivor.server.shutdown()
    assert refused.status_code == 503 and "overloaded" in refused.json()["error"]
    assert elapsed_s < max_degraded_wait_s + 0.25, "the waits end by max_degraded_wait_s"
    # 0: answered at once after the one refusal; 0.35 s: sent again after each 0.1 s hold while one more
    # fits (4 sends on time; fewer when a busy machine delays them, never more).
    if max_degraded_wait_s == 0:
        assert survivor.inferences == 1
    else:
        assert 2 <= survivor.inferences <= 4


def test_a_hold_is_capped_by_max_overload_hold_s_and_zero_turns_it_off(fleet: Fleet) -> None:
    overloaded = Overloaded(retry_after_s=30.0)
    try:
        capped = fleet.router("hold-capped", upstream_ports=[overloaded.port], max_overload_hold_s=0.2)
        off = fleet.router("hold-off", upstream_ports=[overloaded.port], max_overload_hold_s=0)
        for url in (capped, off):
            wait_for(f"{url}/v2/health/ready")
        with httpx.Client(timeout=5) as client:
            client.post(f"{capped}/v2/models/alpha/infer", json=infer_body())
            time.sleep(0.3)  # 30 s asked, 0.2 s allowed: a recovered replica is not starved
            client.post(f"{capped}/v2/models/alpha/infer", json=infer_body())
            assert overloaded.inferences == 2
            for _ in range(3):
                client.post(f"{off}/v2/models/alpha/infer", json=infer_body())
            assert overloaded.inferences == 5
    finally:
        overloaded.server.shutdown()


def test_the_router_serves_tls_from_its_certificate(fleet: Fleet, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed(cert, key)
    config = tmp_path / "router-tls.json"
    upstreams = [Upstream(name="g-0", group="g", url=fleet.url(0), models=["alpha", "beta"])]
    write_router_settings(
        RouterSettings(
            fleet="itest",
            port=0,
            upstreams=upstreams,
            health_interval_s=0.1,
            tls_cert_file=cert,
            tls_key_file=key,
        ),
        config,
    )
    process, port = start_router(config)
    try:
        context = client_ssl_context(cert)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"https://127.0.0.1:{port}/v2/health/ready", verify=context).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the TLS router never became ready"
            time.sleep(0.1)
        response = httpx.post(
            f"https://127.0.0.1:{port}/v2/models/alpha/infer", json=infer_body(), verify=context
        )
        assert response.status_code == 200 and response.json()["model_name"] == "alpha"
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
    finally:
        stop(process)


def test_no_ready_replica_gets_503_with_retry_after(fleet: Fleet) -> None:
    with refused_port() as closed_port:  # nothing listens here
        url = fleet.router("dead", upstream_ports=[closed_port])
        response = httpx.post(f"{url}/v2/models/alpha/infer", json=infer_body())
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "no ready replica" in response.json()["error"]
        ready = httpx.get(f"{url}/v2/health/ready")
        assert ready.status_code == 503 and "alpha" in ready.json()["error"]
        index = httpx.post(f"{url}/v2/repository/index", content=b"{}").json()
        assert {entry["state"] for entry in index} == {"UNAVAILABLE"}


def test_a_killed_replica_costs_a_retry_not_a_failed_request(fleet: Fleet, tmp_path: Path) -> None:
    # Two fresh servers; the router polls rarely so it learns of the death from a failed connection.
    started = [start_server(fleet.artifacts, tmp_path) for _ in range(2)]
    servers = [process for process, _ in started]
    ports = [port for _, port in started]
    try:
        for port in ports:
            wait_for(f"http://127.0.0.1:{port}/v2/health/ready")
        url = fleet.router("retry", upstream_ports=ports, health_interval_s=30)
        wait_for(f"{url}/v2/health/ready")
        with httpx.Client() as client:
            for _ in range(4):  # warm keep-alive connections to both
                assert client.post(f"{url}/v2/models/alpha/infer", json=infer_body()).status_code == 200
            os.kill(servers[0].pid, signal.SIGKILL)
            servers[0].wait()
            statuses = [
                client.post(f"{url}/v2/models/alpha/infer", json=infer_body()).status_code for _ in range(10)
            ]
        assert statuses == [200] * 10
        status = httpx.get(f"{url}/fleet/status").json()["models"]["alpha"]
        assert status["retries"] >= 1
        assert status["ready_replicas"] == 1
    finally:
        for server in servers:
            stop(server)


@pytest.fixture(scope="module")
def keys(fleet: Fleet) -> tuple[Path, dict[str, str]]:
    """A key store with a `read` key and an `infer:alpha` key (the plaintexts by scope)."""
    keys_file = fleet.root / "keys.json"
    store = KeyStore(keys_file)
    return keys_file, {
        "read": store.create("dashboard", ["read"], actor="test").key,
        "infer": store.create("client", ["infer:alpha"], actor="test").key,
    }


# What the router answers itself, and the scope each needs with auth on.
ROUTER_OWN = [
    ("GET", "/fleet/status"),
    ("GET", "/metrics"),
    ("GET", "/v2"),
    ("POST", "/v2/repository/index"),
    ("GET", "/v2/models/gamma"),  # not in the fleet: no 404 before the key is checked
    ("POST", "/v2/models/gamma/infer"),
]


def test_with_auth_the_routers_own_routes_need_a_key_and_probes_stay_open(
    fleet: Fleet, keys: tuple[Path, dict[str, str]]
) -> None:
    keys_file, key = keys
    url = fleet.router("auth", keys_file=keys_file)
    with httpx.Client(base_url=url, timeout=10) as client:
        for method, path in ROUTER_OWN:
            forged = key["read"][:-4] + "AAAA"  # a real key id with a wrong secret: the KDF decides
            for headers in ({}, {"Authorization": "Bearer mf_nope_notakey"}, {"X-API-Key": forged}):
                response = client.request(method, path, content=b"{}", headers=headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.json()["error"] in ("invalid API key", MISSING_MESSAGE)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="modelfleet"'
            infer_only = client.request(method, path, content=b"{}", headers={"X-API-Key": key["infer"]})
            assert infer_only.status_code == 403, (path, infer_only.text)
            assert "WWW-Authenticate" not in infer_only.headers

        read = {"Authorization": f"Bearer {key['read']}"}
        status = client.get("/fleet/status", headers=read)
        assert status.status_code == 200 and status.json()["ready"] is True
        assert set(status.json()["models"]) == {"alpha", "beta"}
        metrics = client.get("/metrics", headers={"X-API-Key": key["read"]})
        assert metrics.status_code == 200 and "modelfleet_router_ready_replicas" in metrics.text
        assert client.get("/v2", headers=read).json()["name"] == "modelfleet-router/itest"
        index = client.post("/v2/repository/index", content=b"{}", headers=read)
        assert sorted(entry["name"] for entry in index.json()) == ["alpha", "beta"]
        unknown = client.get("/v2/models/gamma", headers=read)
        assert unknown.status_code == 404 and "not in fleet" in unknown.json()["error"]

        for probe in ("/v2/health/live", "/v2/health/ready", "/router/ready"):
            assert client.get(probe).status_code == 200, probe
        # Model routes are the servers' to check (these test servers run without auth).
        assert client.post("/v2/models/alpha/infer", json=infer_body()).status_code == 200


def test_metrics_stay_open_when_the_fleet_does_not_protect_them(
    fleet: Fleet, keys: tuple[Path, dict[str, str]]
) -> None:
    keys_file, key = keys
    url = fleet.router("auth-open-metrics", keys_file=keys_file, protect_metrics=False)
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.status_code == 200 and "modelfleet_router_requests_total" in metrics.text
    status = httpx.get(f"{url}/fleet/status")
    assert status.status_code == 401 and "missing API key" in status.json()["error"]
    allowed = httpx.get(f"{url}/fleet/status", headers={"Authorization": f"Bearer {key['read']}"})
    assert allowed.status_code == 200
