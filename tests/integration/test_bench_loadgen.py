"""The load generator against reference servers on loopback whose truth is known.

The V2 reference server serves one request at a time with a fixed 20 ms service time and measures
each service time itself, so the tests compare the generator's figures with what the server saw.
Late-send limits are relaxed where lateness is not the subject: this machine is shared, and a busy
neighbour delaying our process is exactly what the late-send check exists to report.
"""

from __future__ import annotations

import csv
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.support.ports import refused_port
from tests.support.refserver import RefServer, refserver

from modelfleet.bench import run_bench
from modelfleet.bench.results import BenchResult
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput, NotFound, Unavailable

# Timing-sensitive: run alone, after the parallel run (Makefile `test`), so another worker cannot skew it.
pytestmark = pytest.mark.serial

RELAXED = {"late_send_threshold_s": 0.25, "max_late_fraction": 0.5}


@pytest.fixture(scope="module")
def server20() -> Iterator[RefServer]:
    with refserver("v2", service_ms=20.0) as server:
        yield server


def _run(server: RefServer, **spec: object) -> BenchResult:
    data: dict[str, object] = {
        "target": server.url,
        "models": [{"name": "echo"}],
        "window_s": 0.5,
        "warmup_s": 0.3,
        **RELAXED,
    }
    data.update(spec)
    return run_bench(BenchSpec.model_validate(data))


def test_closed_loop_p50_is_within_ten_percent_of_the_true_service_time(server20: RefServer) -> None:
    before = server20.stats()["served"]
    result = _run(server20, mode="closed", points=[{"concurrency": 1, "duration_s": 2.0}])
    truth_s = server20.stats()["median_service_s"]
    point = result.points[0]
    assert point.summary is not None
    assert server20.stats()["served"] - before >= point.ok
    assert point.summary.latency.p50_ms == pytest.approx(truth_s * 1000, rel=0.10)
    # one request at a time: throughput is 1 / latency
    assert point.summary.throughput_per_s == pytest.approx(1000 / point.summary.latency.p50_ms, rel=0.15)
    assert point.errors == {} and point.ok == point.sent


def test_overload_shows_in_corrected_latency_while_uncorrected_hides_it(server20: RefServer) -> None:
    # Capacity is 50/s; offer 80/s with one connection, as a closed-loop tool would: the backlog grows.
    result = _run(server20, mode="open", points=[{"rate_per_s": 80.0, "duration_s": 2.5}], max_in_flight=1)
    point = result.points[0]
    summary = point.summary
    assert summary is not None
    windows = [w for w in point.windows if w.length_s >= 0.5 and w.p50_ms is not None]
    assert len(windows) >= 4
    assert windows[-1].p50_ms > windows[0].p50_ms + 300  # corrected latency grows with time  # type: ignore[operator]
    assert summary.latency.p50_ms > 5 * summary.uncorrected_latency.p50_ms  # type: ignore[operator]
    assert summary.uncorrected_latency.p99_ms < 60  # uncorrected: looks like a healthy ~20 ms server  # type: ignore[operator]
    assert point.capped_sends > 0.25 * point.sent
    assert summary.throughput_per_s == pytest.approx(47, rel=0.15)
    assert any("in-flight cap" in w for w in summary.warnings)


def test_open_loop_below_capacity_delivers_the_rate(server20: RefServer) -> None:
    result = _run(server20, mode="open", points=[{"rate_per_s": 25.0, "duration_s": 2.0}], arrival="poisson")
    point = result.points[0]
    assert point.summary is not None
    assert point.sent == point.scheduled == pytest.approx(50, abs=20)  # Poisson count over 2 s
    assert point.ok == point.sent
    assert point.summary.latency.p50_ms < 60


def test_errors_are_counted_by_kind() -> None:
    with refserver("v2", service_ms=1.0, fail_every=4) as server:
        result = _run(
            server,
            models=[{"name": "flaky"}],
            mode="rnd",
            warmup_s=0.0,
            points=[{"concurrency": 1, "requests": 40}],
        )
    point = result.points[0]
    assert point.sent == 40 and point.errors == {"http_500": 10} and point.ok == 30
    assert point.summary is not None and point.summary.error_rate == pytest.approx(0.25)


def test_timeouts_count_from_the_intended_send() -> None:
    with refserver("v2", service_ms=400.0) as server:
        result = _run(
            server, mode="closed", warmup_s=0.0, timeout_s=0.1, points=[{"concurrency": 2, "duration_s": 0.6}]
        )
    point = result.points[0]
    assert point.ok == 0 and point.errors.get("timeout", 0) >= 6
    assert point.summary is not None and point.summary.error_rate == 1.0
    assert point.summary.latency.p50_ms is None


def test_seq_mode_visits_every_model_in_order(server20: RefServer, tmp_path: Path) -> None:
    log = tmp_path / "requests.csv"
    result = _run(
        server20, mode="seq", repeat=2, models=[{"name": "echo"}, {"name": "vector"}], requests_csv=str(log)
    )
    point = result.points[0]
    assert [(e.name, e.sent, e.ok) for e in point.endpoints] == [("echo", 2, 2), ("vector", 2, 2)]
    assert all(e.p50_ms is not None and e.p50_ms >= 19 for e in point.endpoints)
    rows = list(csv.DictReader(log.open()))
    assert [r["endpoint"] for r in rows] == ["echo", "vector", "echo", "vector"]
    assert all(r["outcome"] == "ok" and float(r["latency_ms"]) >= 19 for r in rows)


def test_traffic_mix_follows_the_weights() -> None:
    with refserver("noop") as server:
        spec = {
            "protocol": "http",
            "endpoints": [
                {"url": f"{server.url}/a", "body_template": '{"t": {{sample}}}', "weight": 3, "name": "a"},
                {"url": f"{server.url}/b", "method": "GET", "name": "b"},
            ],
            "mode": "rnd",
            "points": [{"concurrency": 4, "requests": 2000}],
            "warmup_s": 0.0,
            **RELAXED,
        }
        result = run_bench(BenchSpec.model_validate(spec))
    counts = {e.name: e.sent for e in result.points[0].endpoints}
    assert counts["a"] + counts["b"] == 2000
    assert counts["a"] / 2000 == pytest.approx(0.75, abs=0.04)


def test_several_processes_merge_into_one_result() -> None:
    with refserver("noop") as server:
        spec = {
            "protocol": "http",
            "endpoints": [{"url": f"{server.url}/x", "body_template": "{}"}],
            "mode": "open",
            "points": [{"rate_per_s": 200.0, "duration_s": 1.0}, {"rate_per_s": 300.0, "requests": 301}],
            "procs": 2,
            "warmup_s": 0.2,
            "window_s": 0.5,
            **RELAXED,
        }
        result = run_bench(BenchSpec.model_validate(spec))
    first, second = result.points
    assert result.run.generators == 2 and len(first.generators) == 2
    assert first.label == "rate 200/s" and first.sent == pytest.approx(200, abs=2)
    assert second.sent == 301 and second.ok == 301
    assert sum(w.ok for w in first.windows) == first.ok


def test_until_stable_stops_on_its_own() -> None:
    with refserver("noop") as server:
        spec = {
            "protocol": "http",
            "endpoints": [{"url": f"{server.url}/x", "body_template": "{}"}],
            "mode": "open",
            "points": [{"rate_per_s": 400.0}],
            "window_s": 0.25,
            "warmup_s": 0.0,
            "stability": {"windows": 3, "tolerance": 0.5, "max_windows": 12},
            **RELAXED,
        }
        result = run_bench(BenchSpec.model_validate(spec))
    point = result.points[0]
    assert point.stop_reason in ("stable", "max_windows")
    assert point.send_s <= 12 * 0.25 + 0.05
    if point.stop_reason == "stable":
        assert point.summary is not None and point.summary.stable


def test_unreachable_target_and_unknown_model(server20: RefServer) -> None:
    with refused_port() as port, pytest.raises(Unavailable, match="cannot reach"):
        _run(server20, target=f"http://127.0.0.1:{port}", mode="seq")
    with pytest.raises(NotFound, match="'nosuch' is not on the server"):
        _run(server20, models=[{"name": "nosuch"}], mode="seq")
    with pytest.raises(InvalidInput, match="cannot be split"):
        _run(server20, mode="closed", procs=4, points=[{"concurrency": 2, "duration_s": 1}])


def test_a_point_connects_before_its_clock_starts() -> None:
    """Connecting costs the target more than a request does; the open loop's first sends must not pay for it."""
    events: list[tuple[str, float]] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            events.append(("connect", time.monotonic()))
            while True:
                length = 0
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line:
                    return
                self.rfile.read(length)
                events.append(("request", time.monotonic()))
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        spec = BenchSpec.model_validate(
            {
                "protocol": "http",
                "endpoints": [
                    {"url": f"http://127.0.0.1:{server.server_address[1]}/x", "body_template": "{}"}
                ],
                "mode": "open",
                "points": [{"rate_per_s": 100, "duration_s": 0.3}],
                "warmup_s": 0.0,
                **RELAXED,
            }
        )
        point = run_bench(spec).points[0]
        server.shutdown()
    assert point.ok == point.sent > 0
    first_request = next(at for kind, at in events if kind == "request")
    connected_before = [at for kind, at in events if kind == "connect" and at < first_request]
    assert len(connected_before) >= 8  # the open loop's floor of warm connections


class _Refusing:
    """A real HTTP server that refuses every request with 503: `retry_after_s` in the body (as a
    modelfleet server or router sends it) or only a Retry-After header."""

    def __init__(self, body: bytes, retry_after_header: str | None = None) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Head and body go out as two writes: without this, Nagle and delayed ACKs add 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                if retry_after_header is not None:
                    self.send_header("Retry-After", retry_after_header)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize(
    ("body", "header", "honour", "most"),
    [
        (b'{"error": "overloaded", "retry_after_s": 0.25}', "1", True, 2 * (1.0 / 0.25 + 2)),
        (b'{"error": "overloaded"}', "1", True, 2 * (1.0 / 1.0 + 2)),
        (b'{"error": "overloaded", "retry_after_s": 0.25}', "1", False, None),
    ],
)
def test_closed_loop_users_wait_what_a_refusal_asks_unless_told_not_to(
    body: bytes, header: str, honour: bool, most: float | None
) -> None:
    refusing = _Refusing(body, header)
    try:
        spec = {
            "protocol": "http",
            "endpoints": [{"url": f"{refusing.url}/x", "body_template": "{}"}],
            "mode": "closed",
            "points": [{"concurrency": 2, "duration_s": 1.0}],
            "warmup_s": 0.0,
            "honour_retry_after": honour,
            **RELAXED,
        }
        result = run_bench(BenchSpec.model_validate(spec))
    finally:
        refusing.server.shutdown()
    point = result.points[0]
    assert point.ok == 0 and point.errors == {"http_503": point.sent}
    if most is not None:  # the body's precise figure wins over the header's whole seconds
        assert 2 <= point.sent <= most
    else:  # resent at once: a refusal storm of far more than a waiting client sends
        assert point.sent > 100
