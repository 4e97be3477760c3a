"""The dashboard's data (observe/ui_data.py) and routes (observe/ui.py), without sockets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from modelfleet.errors import NotFound, Unauthorized
from modelfleet.fleet.routing import quantile_from_buckets
from modelfleet.observe.ui import ParsedFigures, cookie_key, page, refused_page, ui_answer, ui_credentials
from modelfleet.observe.ui_data import (
    FleetInputs,
    ServerFigures,
    event_rows,
    fleet_document,
    latest_reports,
    quantile_ms,
    report_file,
    server_document,
    server_figures,
)
from modelfleet.server.metrics import ServerMetrics


def _exposition() -> str:
    metrics = ServerMetrics()
    alpha = metrics.bind("alpha")
    for _ in range(8):
        alpha.count("success")
        alpha.observe_request_s(0.004)
    alpha.count("overloaded")
    alpha.count("bad_request")
    alpha.observe_request_s(0.150)
    alpha.on_batch(3, 2, 0.002, [0.001, 0.003])
    metrics.for_model("no-such-model").count("not_found")
    return metrics.exposition().decode()


def test_server_figures_reads_counts_queue_and_latency_from_a_real_exposition() -> None:
    figures = server_figures(_exposition())
    assert set(figures.models) == {"alpha"}  # names no model serves stay out of the page
    alpha = figures.models["alpha"]
    assert (alpha.requests, alpha.errors) == (10, 1)  # a 503 is the server's failure, a 400 the client's
    assert alpha.queue_count == 2 and alpha.queue_sum_s == pytest.approx(0.004)
    assert alpha.latency_cumulative[-1] == 9 and alpha.latency_bounds[-1] == float("inf")
    assert figures.resident_memory_bytes is not None and figures.resident_memory_bytes > 0
    assert figures.start_time_unix is not None


def test_server_figures_reads_label_values_with_escapes() -> None:
    metrics = ServerMetrics()
    odd = 'a "quoted"\\back\nslash'
    metrics.bind(odd).count("timeout", 3)
    figures = server_figures(metrics.exposition().decode())
    assert figures.models[odd].requests == 3 and figures.models[odd].errors == 3


def test_parsed_figures_are_reused_while_younger_than_their_parse() -> None:
    calls = []

    async def exposition() -> bytes:
        calls.append(1)
        return _exposition().encode()

    async def twice() -> tuple[ServerFigures, ServerFigures]:
        cache = ParsedFigures(exposition)
        return await cache.get(), await cache.get()

    first, second = asyncio.run(twice())
    assert first.models["alpha"].requests == 10
    assert len(calls) in (1, 2) and (second is first) == (len(calls) == 1)


def test_quantile_ms_agrees_with_the_router_estimate() -> None:
    bounds = [0.001, 0.005, 0.01, float("inf")]
    for cumulative in ([0, 8, 9, 10], [5, 5, 5, 5], [0, 0, 0, 3]):
        for q in (0.5, 0.99):
            expected = quantile_from_buckets(q, bounds, cumulative)
            assert expected is not None
            assert quantile_ms(q, bounds, cumulative) == pytest.approx(expected * 1000, abs=0.001)
    assert quantile_ms(0.5, bounds, [0, 0, 0, 0]) is None


def test_server_document_lists_each_model_once_with_its_state() -> None:
    figures = server_figures(_exposition())
    index = [
        {"name": "alpha", "version": "1", "state": "UNAVAILABLE"},
        {"name": "alpha", "version": "2", "state": "READY"},
        {"name": "beta", "version": "1", "state": "LOADING"},
    ]
    document = server_document("127.0.0.1:8000", index, figures, 1.0, now=1000.0)
    rows = {row["name"]: row for row in document["models"]}
    assert rows["alpha"]["ready_replicas"] == 1 and rows["alpha"]["requests"] == 10
    assert rows["alpha"]["p50_ms"] is not None and rows["alpha"]["p99_ms"] > rows["alpha"]["p50_ms"]
    assert rows["beta"]["ready_replicas"] == 0 and rows["beta"]["requests"] == 0
    [process] = document["processes"]
    assert process["state"] == "loading" and process["rss_bytes"] == figures.resident_memory_bytes
    assert document["events"] == [] and document["kind"] == "server"


def test_fleet_document_joins_router_figures_state_and_replica_queue_waits() -> None:
    replica = ServerFigures()
    replica.models = server_figures(_exposition()).models
    status = {
        "ready": True,
        "models": {
            "alpha": {
                "ready_replicas": 1,
                "replicas": [{"name": "cpu-0-0"}, {"name": "cpu-0-1"}],
                "requests": 40,
                "errors": 2,
                "retries": 1,
                "p50_ms": 3.0,
                "p99_ms": 90.0,
            }
        },
    }
    processes = [
        {"id": "cpu-0-0", "kind": "server", "models": ["alpha"], "state": "ready", "pid": 11, "restarts": 2},
        {"id": "cpu-0-1", "kind": "server", "models": ["alpha"], "state": "backoff", "pid": None, "restarts": 1,
         "started_at": 990.0},
        {"id": "router", "kind": "router", "models": ["alpha"], "state": "ready", "pid": 10, "restarts": 0},
    ]  # fmt: skip
    objective = {
        "name": "alpha",
        "latency_ms": 50.0,
        "percentile": 99.0,
        "error_rate_percent": 1.0,
        "timeout_s": 5,
    }
    inputs = FleetInputs(
        fleet="shop",
        status=status,
        processes=processes,
        objectives={"alpha": objective},
        replica_figures={"cpu-0-0": replica},
        events=event_rows(
            [{"at": 1.0, "kind": "alert", "summary": "a"}, {"at": 2.0, "kind": "replica_restarted"}]
        ),
        reports=[],
        memory={"cpu-0-0": (123, 900.0)},
    )
    document = fleet_document(inputs, 0.5, now=1000.0)
    [alpha] = document["models"]
    assert (alpha["requests"], alpha["errors"], alpha["p99_ms"], alpha["retries"]) == (40, 2, 90.0, 1)
    assert alpha["queue_count"] == 2 and alpha["restarts"] == 3 and alpha["replicas"] == 2
    assert alpha["slo"] == {"latency_ms": 50.0, "percentile": 99.0, "error_rate_percent": 1.0}
    by_id = {p["id"]: p for p in document["processes"]}
    assert by_id["cpu-0-0"]["rss_bytes"] == 123 and by_id["cpu-0-0"]["uptime_s"] == 100.0
    assert by_id["cpu-0-1"]["uptime_s"] == 10.0 and by_id["cpu-0-1"]["rss_bytes"] is None
    assert [e["kind"] for e in document["events"]] == ["replica_restarted", "alert"]  # newest first
    assert document["refresh_s"] == 0.5 and document["ready"] is True


def test_reports_are_the_newest_of_each_kind_and_nothing_else(tmp_path: Path) -> None:
    for name, mtime in (("bench-a.html", 10), ("bench-b.html", 20), ("review.html", 5), ("notes.html", 30)):
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / "secret.txt").write_text("no")
    reports = latest_reports(tmp_path)
    assert [(r["kind"], r["name"], r["url"]) for r in reports] == [
        ("bench", "bench-b.html", "/ui/reports/bench-b.html"),
        ("review", "review.html", "/ui/reports/review.html"),
    ]
    assert report_file(tmp_path, "bench-b.html") == tmp_path / "bench-b.html"
    for name in ("bench-a.html", "notes.html", "secret.txt", "../bench-b.html"):
        assert report_file(tmp_path, name) is None
    assert latest_reports(None) == [] and latest_reports(tmp_path / "missing") == []


def test_credentials_come_from_a_header_else_the_page_cookie() -> None:
    assert cookie_key("a=1; modelfleet_key=mf_ab%2Bc; b=2") == "mf_ab+c"
    assert cookie_key("modelfleet_key=") is None and cookie_key(None) is None
    assert ui_credentials("Bearer x", "y", "modelfleet_key=z") == "Bearer x"
    assert ui_credentials(None, "y", "modelfleet_key=z") == "y"
    assert ui_credentials(None, None, "modelfleet_key=z") == "z"


def test_routes_answer_the_page_its_data_and_404s_naming_the_routes(tmp_path: Path) -> None:
    async def data() -> dict[str, object]:
        return {"kind": "server"}

    status, headers, body = asyncio.run(ui_answer("/ui", data, None))
    assert status == 200 and body == page() and b"<script>" in body
    assert dict(headers)[b"content-type"].startswith(b"text/html")
    assert b"connect-src 'self'" in dict(headers)[b"content-security-policy"]
    assert b"http://" not in body and b"https://" not in body  # self-contained: nothing from elsewhere
    status, _, body = asyncio.run(ui_answer("/ui/data", data, None))
    assert status == 200 and body == b'{"kind":"server"}'
    for path in ("/ui/other", "/ui/reports/x.html"):
        with pytest.raises(NotFound, match="/ui"):
            asyncio.run(ui_answer(path, data, tmp_path))
    status, headers, body = refused_page(Unauthorized("missing API key"))
    assert status == 401 and body == page() and (b"www-authenticate", b'Bearer realm="modelfleet"') in headers
