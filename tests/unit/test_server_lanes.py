"""The run queue of a shared session: names' runs never overlap, merge when compatible, fail alone."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import InvalidInput, Unavailable
from modelfleet.runtime import load_model
from modelfleet.server.batching import Batcher
from modelfleet.server.lanes import RunLane
from modelfleet.types import Arrays


async def test_thirty_names_on_one_session_run_one_at_a_time_merged_each_with_its_own_rows(
    iris_artifact: Path,
) -> None:
    model = load_model(iris_artifact, intra_op_threads=1)
    running, most, runs = 0, 0, 0
    guard = threading.Lock()

    def counted(inputs: Arrays) -> Arrays:  # the real model, its concurrent runs counted
        nonlocal running, most, runs
        with guard:
            running += 1
            runs += 1
            most = max(most, running)
        try:
            return model.predict(inputs)
        finally:
            with guard:
                running -= 1

    lane = RunLane(counted, workers=1, name="iris")
    batchers = [
        Batcher(model.predict, max_batch_size=8, max_delay_s=0.0, max_queue_items=64, name=f"n{i}")
        for i in range(30)
    ]
    for batcher in batchers:
        batcher.share_runs(lane)
        batcher.start()
    rng = np.random.default_rng(0)
    requests = [model.example_inputs(1) for _ in range(90)]
    for inputs in requests:
        for name, array in inputs.items():
            inputs[name] = (array + rng.normal(size=array.shape)).astype(array.dtype)
    loop = asyncio.get_running_loop()
    try:
        results = await asyncio.gather(
            *(batchers[i % 30].submit(inputs, 1, loop.time() + 10) for i, inputs in enumerate(requests))
        )
    finally:
        for batcher in batchers:
            await batcher.close()
        lane.close()
    assert most == 1  # 30 batchers, one session: never two runs at once
    # Unmerged, every name's batches would be a run each: at least 30 (one per name).
    assert runs <= 16  # merged: 3-item jobs, two to an 8-item run, after the first alone
    for inputs, result in zip(requests, results, strict=True):
        alone = model.predict(inputs)
        for name, array in alone.items():
            np.testing.assert_allclose(result[name], array, rtol=1e-5, atol=1e-6)


def _negative_is_invalid(inputs: Arrays) -> Arrays:
    values = inputs["x"]
    if (values < 0).any():
        raise InvalidInput("negative input")
    return {"y": values * 2}


async def test_a_merged_run_that_fails_is_rerun_job_by_job() -> None:
    lane = RunLane(_negative_is_invalid, workers=1, name="t")
    one = np.ones((1, 2), np.float32)
    # The first starts at once; the next two queue behind it and would share one run.
    first = lane.submit({"x": one}, 1, (), 8)
    good = lane.submit({"x": 3 * one}, 1, (), 8)
    bad = lane.submit({"x": -one}, 1, (), 8)
    results = await asyncio.gather(first, good, bad, return_exceptions=True)
    lane.close()
    assert isinstance(results[2], InvalidInput)  # only the bad request's name fails
    good_result = results[1]
    assert not isinstance(good_result, BaseException)
    outputs, waited_s = good_result
    np.testing.assert_array_equal(outputs["y"], 6 * one)
    assert waited_s >= 0.0


def _slow(inputs: Arrays) -> Arrays:
    time.sleep(0.02)
    return {"y": inputs["x"]}


async def test_an_idle_name_on_a_busy_lane_is_refused_by_the_lanes_wait() -> None:
    lane = RunLane(_slow, workers=1, name="slow")
    loop = asyncio.get_running_loop()
    x = {"x": np.ones((1, 2), np.float32)}
    busy = [
        Batcher(_slow, max_batch_size=1, max_delay_s=0.0, max_queue_items=8, name=f"b{i}") for i in range(8)
    ]
    idle = Batcher(_slow, max_batch_size=1, max_delay_s=0.0, max_queue_items=8, max_queue_wait_s=0.05)
    for batcher in [*busy, idle]:
        batcher.share_runs(lane)
        batcher.seed([(1, 0.02)])
        batcher.start()
    try:
        await busy[0].submit(x, 1, loop.time() + 10)  # the lane measures a run
        # Eight names each queue one run of ~20 ms: ~160 ms ahead of anything new on the lane.
        pending = [asyncio.ensure_future(b.submit(x, 1, loop.time() + 10)) for b in busy]
        await asyncio.sleep(0.005)
        assert lane.wait_s(loop.time()) > 0.05
        with pytest.raises(Unavailable, match=r"batching\.max_queue_wait_s"):
            await idle.submit(x, 1, loop.time() + 10)  # its own queue is empty; the lane's is not
        await asyncio.gather(*pending)
        assert lane.wait_s(loop.time()) == 0.0
        await idle.submit(x, 1, loop.time() + 10)  # the lane drained: admitted
    finally:
        for batcher in [*busy, idle]:
            await batcher.close()
        lane.close()
