"""The batcher as a unit: real asyncio, a real (slow) model function, no HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from modelfleet.errors import DeadlineExceeded, ModelfleetError, Unavailable
from modelfleet.server.batching import Batcher

Arrays = dict[str, np.ndarray[Any, Any]]


class DoublingModel:
    """Doubles its input after `run_s`; records each batch's size and the thread it ran on."""

    def __init__(self, run_s: float = 0.0) -> None:
        self.run_s = run_s
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, inputs: Arrays) -> Arrays:
        self.batch_sizes.append(int(inputs["x"].shape[0]))
        self.threads.add(threading.current_thread().name)
        if self.run_s:
            time.sleep(self.run_s)
        return {"y": inputs["x"] * 2}


def _rows(value: float, items: int = 1, width: int = 2) -> Arrays:
    return {"x": np.full((items, width), value, dtype=np.float32)}


async def _submit_all(batcher: Batcher, requests: list[Arrays], timeout_s: float = 5.0) -> list[Any]:
    loop = asyncio.get_running_loop()
    return await asyncio.gather(
        *(batcher.submit(r, r["x"].shape[0], loop.time() + timeout_s) for r in requests),
        return_exceptions=True,
    )


async def test_each_request_gets_its_own_rows_back() -> None:
    model = DoublingModel()
    batcher = Batcher(model, max_batch_size=8, max_delay_s=0.01, max_queue_items=100)
    batcher.start()
    results = await _submit_all(batcher, [_rows(float(i), items=1 + i % 3) for i in range(12)])
    for i, result in enumerate(results):
        assert result["y"].shape == (1 + i % 3, 2)
        assert np.all(result["y"] == 2 * i)
    assert max(model.batch_sizes) <= 8 + 2  # one request is never split across batches
    assert len(model.batch_sizes) < 12, "requests arriving together must share runs"
    assert all(name.startswith("run-") for name in model.threads), "the model must run off the event loop"
    await batcher.close()


async def test_idle_model_starts_at_once_without_waiting_for_the_delay() -> None:
    model = DoublingModel()
    batcher = Batcher(model, max_batch_size=64, max_delay_s=2.0, max_queue_items=100)
    batcher.start()
    started = time.perf_counter()
    await _submit_all(batcher, [_rows(1.0)])
    assert time.perf_counter() - started < 0.5
    await batcher.close()


async def test_batch_closes_after_max_delay_when_not_full() -> None:
    model = DoublingModel()
    batcher = Batcher(
        model, max_batch_size=64, max_delay_s=0.05, max_queue_items=100, dispatch_when_idle=False
    )
    batcher.start()
    started = time.perf_counter()
    await _submit_all(batcher, [_rows(1.0)])
    waited_s = time.perf_counter() - started
    assert 0.04 <= waited_s < 0.5
    assert model.batch_sizes == [1]
    await batcher.close()


async def test_full_batch_does_not_wait_for_the_delay() -> None:
    model = DoublingModel()
    batcher = Batcher(model, max_batch_size=4, max_delay_s=2.0, max_queue_items=100, dispatch_when_idle=False)
    batcher.start()
    started = time.perf_counter()
    await _submit_all(batcher, [_rows(1.0) for _ in range(4)])
    assert time.perf_counter() - started < 1.0
    assert model.batch_sizes == [4]
    await batcher.close()


async def test_next_batch_fills_while_the_current_one_runs() -> None:
    model = DoublingModel(run_s=0.1)
    batcher = Batcher(model, max_batch_size=16, max_delay_s=0.0, max_queue_items=100)
    batcher.start()
    loop = asyncio.get_running_loop()
    first = loop.create_task(batcher.submit(_rows(1.0), 1, loop.time() + 5))
    await asyncio.sleep(0.02)  # the first run is now in flight
    rest = await _submit_all(batcher, [_rows(2.0) for _ in range(10)])
    await first
    assert all(not isinstance(r, Exception) for r in rest)
    assert model.batch_sizes == [1, 10]
    await batcher.close()


async def test_full_queue_refuses_with_retry_after() -> None:
    model = DoublingModel(run_s=0.2)
    batcher = Batcher(model, max_batch_size=2, max_delay_s=0.0, max_queue_items=4)
    batcher.start()
    results = await _submit_all(batcher, [_rows(1.0) for _ in range(12)])
    refused = [r for r in results if isinstance(r, Unavailable)]
    served = [r for r in results if isinstance(r, dict)]
    assert refused and served
    assert all(r.retry_after_s and r.retry_after_s > 0 for r in refused)
    assert "overloaded" in refused[0].message
    await batcher.close()


async def test_deadline_fails_waiting_requests_and_they_are_not_run() -> None:
    model = DoublingModel(run_s=0.3)
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0.0, max_queue_items=100)
    batcher.start()
    results = await _submit_all(batcher, [_rows(float(i)) for i in range(4)], timeout_s=0.1)
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    await asyncio.sleep(0.4)
    assert len(model.batch_sizes) <= 2, "expired requests must be dropped, not run"
    await batcher.close()


async def test_wrong_output_count_fails_every_waiter_with_one_clear_error() -> None:
    def broken(inputs: Arrays) -> Arrays:
        return {"y": inputs["x"][:1]}

    batcher = Batcher(broken, max_batch_size=8, max_delay_s=0.02, max_queue_items=100)
    batcher.start()
    results = await _submit_all(batcher, [_rows(1.0) for _ in range(3)])
    assert all(isinstance(r, ModelfleetError) for r in results)
    assert "first dimension must equal the batch size" in str(results[0])
    assert len({str(r) for r in results}) == 1
    await batcher.close()


async def test_requests_of_different_shapes_do_not_share_a_run() -> None:
    model = DoublingModel()
    batcher = Batcher(model, max_batch_size=8, max_delay_s=0.02, max_queue_items=100)
    batcher.start()
    results = await _submit_all(batcher, [_rows(1.0, width=2), _rows(2.0, width=3), _rows(3.0, width=2)])
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (1, 2)]
    assert sorted(model.batch_sizes) == [1, 2]
    await batcher.close()


async def test_model_exception_becomes_an_error_for_its_batch_only() -> None:
    calls = {"n": 0}

    def flaky(inputs: Arrays) -> Arrays:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    batcher = Batcher(flaky, max_batch_size=1, max_delay_s=0.0, max_queue_items=10)
    batcher.start()
    first, second = await _submit_all(batcher, [_rows(1.0), _rows(2.0)])
    assert isinstance(first, ModelfleetError) and "boom" in str(first)
    assert isinstance(second, dict)
    await batcher.close()


async def test_drain_finishes_queued_work_then_refuses_new() -> None:
    model = DoublingModel(run_s=0.05)
    batcher = Batcher(model, max_batch_size=2, max_delay_s=0.0, max_queue_items=100)
    batcher.start()
    loop = asyncio.get_running_loop()
    pending = [loop.create_task(batcher.submit(_rows(1.0), 1, loop.time() + 5)) for _ in range(5)]
    await asyncio.sleep(0)
    await batcher.drain(timeout_s=5)
    assert all(task.done() and not task.exception() for task in pending)
    with pytest.raises(Unavailable):
        await batcher.submit(_rows(1.0), 1, loop.time() + 5)
    await batcher.close()
