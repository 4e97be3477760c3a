"""Admission under overload on a real server with a real MiniLM: the excess is refused fast, the admitted
stay fast, and nothing waits past its deadline. Bounds are loose (shared CI machines); figures belong in
benchmarks/chaos.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pytest
from tests.support.servers import RunningServer, serve

from modelfleet.build import BUNDLED_MODEL_NAME as MINILM

# Timing-sensitive: run alone, after the parallel run (Makefile `test`), so another worker cannot skew it.
pytestmark = pytest.mark.serial

BODY = {
    "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a short sentence to embed"]}]
}
DEADLINE_MS = 2000


@dataclass
class Answer:
    status: int
    elapsed_s: float
    retry_after: str | None
    document: dict[str, object]
    sent_s: float = 0.0  # when it was sent, from the start of the load


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm_fp32_artifact: Path) -> Iterator[RunningServer]:
    with serve(
        ["--model", str(minilm_fp32_artifact), "--max-batch-size", "8"], tmp_path_factory.mktemp("overload")
    ) as running:
        yield running


async def _post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], sent_s: float = 0.0
) -> Answer:
    started = time.perf_counter()
    async with session.post(url, json=BODY, headers=headers) as response:
        document = await response.json(content_type=None)
        elapsed_s = time.perf_counter() - started
        return Answer(response.status, elapsed_s, response.headers.get("Retry-After"), document, sent_s)


async def _sequential(url: str, count: int) -> list[Answer]:
    async with aiohttp.ClientSession() as session:
        return [await _post(session, url, {}) for _ in range(count)]


async def _open_loop(url: str, rate_per_s: float, duration_s: float) -> list[Answer]:
    """Requests started on a fixed schedule whatever the answers (an open loop), each with a deadline."""
    headers = {"X-Request-Timeout-Ms": str(DEADLINE_MS)}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(int(rate_per_s * duration_s)):
            delay = start + i / rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(_post(session, url, headers, i / rate_per_s)))
        return list(await asyncio.gather(*tasks))


async def _closed_loop_rate(url: str, clients: int, duration_s: float) -> float:
    """Answers per second with `clients` requests always in flight: the server's capacity here."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        counts = [0] * clients

        async def client(index: int) -> None:
            while loop.time() < end:
                if (await _post(session, url, {})).status == 200:
                    counts[index] += 1

        await asyncio.gather(*(client(i) for i in range(clients)))
        return sum(counts) / duration_s


def _refused_by_admission(metrics: str) -> float:
    shed = [line for line in metrics.splitlines() if line.startswith("modelfleet_shed_requests_total{")]
    return sum(float(line.split()[-1]) for line in shed if 'reason="expired"' not in line)


def _mean_run_s(metrics_before: str, metrics_after: str) -> float:
    """The mean run time of the model's batches between two /metrics scrapes."""

    def totals(metrics: str) -> tuple[float, float]:
        def value(name: str) -> float:
            line = next(x for x in metrics.splitlines() if x.startswith(f'{name}{{model="{MINILM}"}} '))
            return float(line.split()[-1])

        family = "modelfleet_compute_duration_seconds"
        return value(f"{family}_sum"), value(f"{family}_count")

    (sum_before, count_before), (sum_after, count_after) = totals(metrics_before), totals(metrics_after)
    return (sum_after - sum_before) / (count_after - count_before)


def _p90(answers: list[Answer]) -> float:
    return float(np.percentile([a.elapsed_s for a in answers], 90))


def test_overload_sheds_the_excess_fast_and_keeps_admitted_latency_bounded(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/{MINILM}/infer"
    unloaded = asyncio.run(_sequential(url, 30))
    assert all(a.status == 200 for a in unloaded)
    unloaded_p90_s = _p90(unloaded[5:])
    # 1.5 times what this machine serves, measured now (a quiet machine serves far more than a busy one),
    # so the excess is certain. Not 3x: this aiohttp client shares the 2 cores, and at 3x it starves the
    # server's event loop, whose socket queues no admission rule can see; the chaos benchmark's own
    # generator drives the 3x row.
    capacity_per_s = asyncio.run(_closed_loop_rate(url, clients=16, duration_s=1.5))
    metrics_before = httpx.get(f"{server.url}/metrics").text
    shed_before = _refused_by_admission(metrics_before)  # the probe's refusals
    answers = asyncio.run(_open_loop(url, rate_per_s=max(300.0, 1.5 * capacity_per_s), duration_s=2.5))
    run_s = _mean_run_s(metrics_before, httpx.get(f"{server.url}/metrics").text)
    statuses = [a.status for a in answers]
    print(  # figures for the log (pytest -s); the bounds below are deliberately loose
        f"capacity {capacity_per_s:.0f}/s; unloaded p90 {unloaded_p90_s * 1000:.1f} ms; {len(answers)} sent: "
        + ", ".join(f"{code}: {statuses.count(code)}" for code in sorted(set(statuses)))
        + f"; admitted p90 {_p90([a for a in answers if a.status == 200]) * 1000:.1f} ms"
        + f", sent after 0.7 s {_p90([a for a in answers if a.status == 200 and a.sent_s >= 0.7]) * 1000:.1f} ms"
        + f"; 503 median {np.median([a.elapsed_s for a in answers if a.status == 503]) * 1000:.1f} ms"
        + f"; mean run {run_s * 1000:.1f} ms"
    )
    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    timed_out = [a for a in answers if a.status == 504]
    assert len(admitted) + len(refused) + len(timed_out) == len(answers), sorted(set(statuses))
    assert refused, "overload must be answered with 503"
    assert len(admitted) >= len(answers) // 20, "the model keeps serving while it sheds"
    assert len(timed_out) <= max(3, len(admitted) // 20), f"504 storm: {len(timed_out)} of {len(answers)}"
    assert max(a.elapsed_s for a in answers) < DEADLINE_MS / 1000 + 0.5, "nothing waits past its deadline"
    for answer in refused[:20]:
        assert answer.retry_after is not None and int(answer.retry_after) >= 1
        retry_after_s = answer.document["retry_after_s"]
        assert isinstance(retry_after_s, float) and retry_after_s > 0
        assert "overloaded" in str(answer.document["error"])
    # Refused at admission, not after queueing: the server counts each refusal by its reason (the last
    # assertion: every 503 is an admission refusal, none an expiry in the queue), and the client sees it long
    # before the deadline it would otherwise have waited for. Not compared with the admitted requests' median:
    # refusals come in the most congested moments, when this client and the server share 2 busy cores, and
    # CI saw a 29 ms refusal median beside an 18 ms admitted one; the 5 ms figure is the chaos benchmark's.
    assert float(np.median([a.elapsed_s for a in refused])) <= DEADLINE_MS / 1000 / 10
    # The first 100 ms of an overload pass as a burst (see docs/serve.md), and their backlog drains in a few
    # hundred ms; after that the admitted requests' latency stays bounded. Under overload the runs are full
    # batches, so the bound is in their time, measured in this window: an admitted request waits for the run
    # in flight and the queue-wait target (about one run here), then its own run; the rest is this client,
    # which shares the 2 cores (CI's 2-core machine: p90 91 ms at 309/s, about 26 ms a run of 8). Without
    # admission the backlog of a 1.5x overload grows by a third of capacity each second: p90 over 1 s.
    steady = [a for a in admitted if a.sent_s >= 0.7]
    assert len(steady) >= 20
    assert _p90(steady) <= 3 * run_s + 0.04, (
        f"admitted p90 {_p90(steady) * 1000:.0f} ms vs a mean run of {run_s * 1000:.0f} ms"
    )
    # Once the overload ends the queue is short, so latency is back near the unloaded figure.
    after = asyncio.run(_sequential(url, 20))
    assert all(a.status == 200 for a in after)
    assert _p90(after) <= 3 * unloaded_p90_s + 0.02
    metrics = httpx.get(f"{server.url}/metrics").text
    # In the server, the queue is cut to its target once it stands: most admitted requests waited little
    # (a burst is let in for 100 ms first, and this shared machine adds noise, hence 75 %, 0.1 s).
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("modelfleet_queue_duration_seconds_bucket{")
    }
    assert buckets["0.1"] >= 0.75 * buckets["+Inf"], buckets
    assert _refused_by_admission(metrics) - shed_before == len(refused)


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", ""])
def test_a_bad_request_timeout_header_is_a_400_naming_it(server: RunningServer, value: str) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/{MINILM}/infer", json=BODY, headers={"X-Request-Timeout-Ms": value}
    )
    assert response.status_code == 400
    assert "X-Request-Timeout-Ms" in response.json()["error"]


def test_the_request_timeout_header_sets_the_deadline(server: RunningServer) -> None:
    url = f"{server.url}/v2/models/{MINILM}/infer"
    long_body = {
        "inputs": [{"name": "text", "shape": [16], "datatype": "BYTES", "data": ["word " * 200] * 16}]
    }
    started = time.perf_counter()
    response = httpx.post(url, json=long_body, headers={"X-Request-Timeout-Ms": "20"}, timeout=30)
    elapsed_s = time.perf_counter() - started
    # 16 long texts take far more than 20 ms: a 504 at the deadline (or a 503 at once), never a late 200.
    assert response.status_code in (503, 504), response.text
    assert "deadline" in response.json()["error"]
    assert elapsed_s < 0.5
    # The abandoned run still holds the model (a run cannot be interrupted): 503s until it ends, then 200.
    statuses = []
    give_up = time.monotonic() + 15
    while time.monotonic() < give_up and 200 not in statuses:
        statuses.append(httpx.post(url, json=BODY, headers={"X-Request-Timeout-Ms": "5000"}).status_code)
        time.sleep(0.05)
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses


async def _resending_clients(url: str, clients: int, duration_s: float) -> list[list[int]]:
    """Closed-loop clients, one connection each, that resend a 503 at once (as wrk and most load tools
    do): every status each one got."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s

    async def client() -> list[int]:
        statuses: list[int] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            while loop.time() < end:
                statuses.append((await _post(session, url, {})).status)
        return statuses

    return list(await asyncio.gather(*(client() for _ in range(clients))))


def test_closed_loop_clients_that_resend_at_once_are_refused_once_not_in_a_storm(
    server: RunningServer,
) -> None:
    # 16 clients of a max_batch_size 8 model: more than the queue-wait target admits at once, so some
    # are refused; a resend before the retry-after it was given marks its connection impatient, and from
    # then on it is queued (two batches' worth at most). A client slower to resend than a retry-after of
    # a few milliseconds honours it in effect, and may be refused again now and then. Before, the
    # resends were refused in a storm that took the cores from the runs (2,034 503s in 3 s here).
    url = f"{server.url}/v2/models/{MINILM}/infer"
    statuses = asyncio.run(_resending_clients(url, 16, 3.0))
    refused, ok = sum(s.count(503) for s in statuses), sum(s.count(200) for s in statuses)
    assert all(set(s) <= {200, 503} for s in statuses), statuses
    assert ok >= 100 and refused <= 0.1 * ok, f"{refused} refused, {ok} answered"


def _series(server: RunningServer, name: str) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    return float(next(x for x in metrics.splitlines() if x.startswith(name + " ")).split()[-1])


def test_requests_whose_clients_hang_up_while_queued_are_never_run(server: RunningServer) -> None:
    import json
    import socket

    def request(texts: list[str]) -> bytes:
        body = json.dumps(
            {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
        ).encode()
        return (
            f"POST /v2/models/{MINILM}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    items_run = f'modelfleet_batch_size_sum{{model="{MINILM}"}}'
    closed = f'modelfleet_requests_total{{model="{MINILM}",outcome="client_closed"}}'
    time.sleep(0.5)  # the earlier tests' runs are over
    before, closed_before = _series(server, items_run), _series(server, closed)
    # A run of 2 items first (~10 ms); 6 lone requests queue behind it (with it they fit one batch of
    # max_batch_size 8, so admission lets them in), and their clients hang up while it runs.
    kept = socket.create_connection(("127.0.0.1", server.port))
    kept.sendall(request(["a sentence to embed"] * 2))
    time.sleep(0.002)
    gone = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    for sock in gone:
        sock.sendall(request(["another sentence"]))
    time.sleep(0.002)
    for sock in gone:
        sock.close()
    assert kept.recv(64).startswith(b"HTTP/1.1 200")
    kept.close()
    time.sleep(1.0)
    run = _series(server, items_run) - before
    assert run <= 4, f"{run - 2:.0f} of 6 abandoned requests were run"
    assert _series(server, closed) - closed_before == 6  # run or dropped, each one is counted
    # The server keeps serving, and a cancelled request is no error in its log.
    assert httpx.post(f"{server.url}/v2/models/{MINILM}/infer", json=BODY).status_code == 200
    assert "Exception in ASGI application" not in server.log() and "Traceback" not in server.log()
