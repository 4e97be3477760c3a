"""Bounded server metrics: only served models get a label, and /metrics renders off the loop, shared."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelfleet.server.metrics import UNKNOWN_MODEL, ServerMetrics


def test_a_name_that_is_not_served_counts_under_unknown_and_adds_no_series() -> None:
    metrics = ServerMetrics()
    metrics.bind("iris").count("success")
    before = metrics.exposition()
    for index in range(200):
        metrics.for_model(f"made-up-{index}-" + "x" * 1000).count("not_found")
    after = metrics.exposition()
    assert b"made-up" not in after
    assert b'modelfleet_requests_total{model="unknown",outcome="not_found"} 200.0' in after
    assert len(after) - len(before) < 16  # one counter went from 0.0 to 200.0
    assert metrics.for_model("iris") is metrics.bind("iris")
    assert metrics.for_model("other") is metrics.for_model(UNKNOWN_MODEL)


def test_release_removes_every_series_of_a_model_that_is_no_longer_served() -> None:
    metrics = ServerMetrics()
    bound = metrics.bind("iris")
    bound.count("success")
    bound.observe_request_s(0.01)
    bound.add_warmup_runs(2)
    assert b'model="iris"' in metrics.exposition()
    metrics.release("iris")
    assert b'model="iris"' not in metrics.exposition()
    assert metrics.for_model("iris") is metrics.for_model(UNKNOWN_MODEL)


async def test_concurrent_scrapes_share_one_render_and_a_slow_render_is_reused() -> None:
    metrics = ServerMetrics()
    for index in range(500):  # a render of a few hundred milliseconds
        metrics.bind(f"model-{index}")
    first, second = await asyncio.gather(metrics.render(), metrics.render())
    assert first is second  # one render in a thread, awaited by both
    metrics.bind("late").count("success")
    assert await metrics.render() is first  # asked again at once: reused for as long as it took
    assert b'model="late"' in metrics.exposition()


async def test_a_quick_render_is_not_reused() -> None:
    metrics = ServerMetrics()
    first = await metrics.render()
    await asyncio.sleep(0.2)  # far longer than rendering a handful of series takes
    metrics.bind("late")
    assert b'model="late"' in await metrics.render() and b'model="late"' not in first


def test_a_pool_worker_merges_the_figures_of_its_multiprocess_dir(tmp_path: Path) -> None:
    # The mode is the argument, not the environment: a pool's figures are its folder's, no process's own.
    assert b"process_cpu_seconds_total" in ServerMetrics().exposition()
    pooled = ServerMetrics(multiprocess_dir=tmp_path)
    pooled.bind("iris").count("success")
    text = pooled.exposition()
    assert b"process_cpu_seconds_total" not in text
    assert b'modelfleet_requests_total{model="iris",outcome="success"} 1.0' in text


async def test_a_rendered_text_is_let_go_once_it_may_no_longer_be_reused() -> None:
    metrics = ServerMetrics()
    for index in range(500):
        metrics.bind(f"model-{index}")
    await metrics.render()
    assert metrics._rendered is not None
    took_s = metrics._rendered[1]
    await asyncio.sleep(took_s + 0.1)
    assert metrics._rendered is None  # a thousands-of-models text is megabytes: not held between scrapes
