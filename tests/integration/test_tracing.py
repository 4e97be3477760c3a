"""OpenTelemetry traces from a real router and a real server, exported over OTLP/HTTP to a real receiver on
loopback (an HTTP server decoding /v1/traces protobuf posts with opentelemetry-proto): the span tree of
an inference, its attributes, and one trace id from the client through the router to the replica."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.support.linear_model import infer_body, make_artifact
from tests.support.servers import start_router, start_server, stop, wait_for

from modelfleet.config.observe import TracingConfig
from modelfleet.fleet.router_config import RouterSettings, Upstream, write_router_settings

pytestmark = pytest.mark.timeout(120)
pytest.importorskip(
    "opentelemetry.sdk", reason="tracing needs the otel extra: pip install 'modelfleet[otel]'"
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str


class Receiver:
    """An OTLP/HTTP traces endpoint: every span of every ExportTraceServiceRequest posted to /v1/traces."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[Span] = []
        self.content_types: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    receiver.content_types.add(self.headers["Content-Type"])
                    export = ExportTraceServiceRequest()
                    export.ParseFromString(body)
                    receiver.spans += list(_spans(export))
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str, names: set[str], timeout_s: float = 10.0) -> list[Span]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [span for span in self.spans if span.trace_id == trace_id]
            if names <= {span.name for span in found}:
                return found
            time.sleep(0.05)
        raise AssertionError(f"trace {trace_id}: no {names} within {timeout_s} s; got {self.spans}")


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _spans(export: Any) -> Iterator[Span]:
    for resource_spans in export.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    service=str(resource.get("service.name")),
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                    status_message=span.status.message,
                )


@dataclass
class Traced:
    receiver: Receiver
    server: str
    router: str


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    root = tmp_path_factory.mktemp("tracing")
    receiver = Receiver()
    spec = root / "serve.yaml"
    tracing = {"enabled": True, "endpoint": f"{receiver.url}/v1/traces", "export_interval_s": 0.1}
    model = {"path": str(make_artifact(root / "alpha", "alpha", 1)), "warmup_runs": 1}
    spec.write_text(yaml.safe_dump({"models": [model], "tracing": tracing}))
    server, server_port = start_server([], root, "--spec", str(spec))
    processes = [server]
    try:
        server_url = f"http://127.0.0.1:{server_port}"
        settings = RouterSettings(
            fleet="traced",
            port=0,
            health_interval_s=0.1,
            upstreams=[Upstream(name="g-0", group="g", url=server_url, models=["alpha"])],
            tracing=TracingConfig(enabled=True, export_interval_s=0.1, service_name="edge"),
        )
        write_router_settings(settings, root / "router.json")
        # The router's endpoint comes from the standard variable (the exporter adds /v1/traces).
        saved = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        try:
            router, router_port = start_router(root / "router.json")
        finally:
            if saved is None:
                del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            else:
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = saved
        processes.append(router)
        router_url = f"http://127.0.0.1:{router_port}"
        wait_for(f"{server_url}/v2/health/ready")
        wait_for(f"{router_url}/v2/health/ready")
        yield Traced(receiver, server_url, router_url)
    finally:
        for process in processes:  # both at once: each takes its graceful shutdown
            process.terminate()
        for process in processes:
            stop(process)
        receiver.server.shutdown()
        receiver.server.server_close()


def test_one_trace_runs_from_the_client_through_the_router_to_the_replica(traced: Traced) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    response = httpx.post(
        f"{traced.router}/v2/models/alpha/infer",
        json=infer_body(rows=3),
        headers={"traceparent": traceparent},
    )
    assert response.status_code == 200
    names = {"router", "route", "decode", "queue", "batch", "compute", "encode"}
    spans = {span.name: span for span in traced.receiver.trace(CLIENT_TRACE, names)}
    assert traced.receiver.content_types == {"application/x-protobuf"}
    router, route = spans["router"], spans["route"]
    assert router.service == "edge" and route.service == "modelfleet-server"
    assert router.parent_id == CLIENT_SPAN  # the client's span is the router's parent
    assert route.parent_id == router.span_id  # the router's attempt is the replica's parent
    assert router.kind == route.kind == 2  # SPAN_KIND_SERVER
    assert (
        router.attributes["modelfleet.replica"] == "g-0"
        and router.attributes["http.response.status_code"] == 200
    )
    for name in ("decode", "queue", "batch", "encode"):
        assert spans[name].parent_id == route.span_id, name
    assert spans["compute"].parent_id == spans["batch"].span_id
    for span in spans.values():
        assert span.attributes["modelfleet.model"] == "alpha"
        assert span.start_ns <= span.end_ns
    assert route.attributes["modelfleet.model_version"] == "1"
    assert spans["batch"].attributes["modelfleet.batch_size"] == 3
    assert spans["batch"].attributes["modelfleet.batch_requests"] == 1
    queue = spans["queue"]
    assert queue.attributes["modelfleet.queue_time_ms"] == pytest.approx(
        (queue.end_ns - queue.start_ns) / 1e6, abs=0.01
    )
    # The steps follow one another inside the route's span, as they ran.
    order = [spans[name] for name in ("decode", "queue", "batch", "encode")]
    assert all(a.end_ns <= b.start_ns + 1000 for a, b in itertools.pairwise(order))
    assert route.start_ns <= order[0].start_ns and order[-1].end_ns <= route.end_ns
    assert router.start_ns <= route.start_ns and route.end_ns <= router.end_ns


def test_a_request_without_traceparent_starts_a_trace_and_a_failure_is_an_error_span(traced: Traced) -> None:
    before = {span.trace_id for span in traced.receiver.spans}
    ok = httpx.post(f"{traced.server}/v2/models/alpha/infer", json=infer_body())
    assert ok.status_code == 200
    bad = httpx.post(
        f"{traced.server}/v2/models/alpha/infer",
        json={"inputs": [{"name": "input", "shape": [1, 9], "datatype": "FP32", "data": [0.0] * 9}]},
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert bad.status_code == 400
    failed = {
        s.name: s for s in traced.receiver.trace("0af7651916cd43dd8448eb211c80319c", {"route", "decode"})
    }
    assert set(failed) == {"route", "decode"}  # refused by the dataplane's input check, before any queue
    route = failed["route"]
    assert route.attributes["http.response.status_code"] == 400 and route.parent_id == "b7ad6b7169203331"
    assert route.status_code == 2 and "input" in route.status_message  # STATUS_CODE_ERROR, with the reason
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = [
            s
            for s in traced.receiver.spans
            if s.trace_id not in before and s.name == "route" and s.parent_id == ""
        ]
        if any(s.attributes["http.response.status_code"] == 200 for s in new):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no root span for the request without traceparent")


def test_with_tracing_off_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from modelfleet.config.serve import ModelConfig, ServeSpec\n"
        "from modelfleet.server.app import create_app\n"
        "from modelfleet.fleet.router import Router\n"
        "from modelfleet.fleet.router_config import RouterSettings, Upstream\n"
        f"app = create_app(ServeSpec(models=[ModelConfig(path={str(make_artifact(tmp_path / 'm'))!r})]))\n"
        "up = Upstream(name='a', group='g', url='http://127.0.0.1:9', models=['m'])\n"
        "router = Router(RouterSettings(fleet='f', upstreams=[up]))\n"
        "assert app.tracer is None and router._tracing is None\n"
        "print(sorted(name for name in sys.modules if name.startswith('opentelemetry')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_server_started_alone_serves_its_own_dashboard(traced: Traced) -> None:
    # This module's server runs alone (no fleet around it): /ui is the one-server page, /ui/data its figures.
    assert httpx.post(f"{traced.server}/v2/models/alpha/infer", json=infer_body()).status_code == 200
    page = httpx.get(f"{traced.server}/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    document = httpx.get(f"{traced.server}/ui/data").json()
    assert document["kind"] == "server" and document["name"] == traced.server.removeprefix("http://")
    [alpha] = document["models"]
    assert alpha["name"] == "alpha" and alpha["ready_replicas"] == 1 and alpha["requests"] >= 1
    assert alpha["errors"] == 0 and alpha["queue_count"] >= 1 and alpha["p99_ms"] > 0
    [process] = document["processes"]
    assert process["state"] == "ready" and process["rss_bytes"] > 0 and process["uptime_s"] > 0
    assert document["events"] == [] and document["reports"] == []
