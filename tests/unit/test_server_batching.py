"""The batcher as a unit: real asyncio, a real (slow) model function, no HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from modelfleet.errors import DeadlineExceeded, ModelfleetError, Unavailable
from modelfleet.server.batching import STANDING_QUEUE_S, Batcher
from modelfleet.server.estimates import ServiceEstimate
from modelfleet.types import Arrays


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


# -- admission by expected wait ---------------------------------------------------------------------


class LinearModel:
    """Sleeps `fixed_s + per_item_s × items` per run (a CPU model's cost); `slowdown` multiplies it."""

    def __init__(self, fixed_s: float, per_item_s: float) -> None:
        self.fixed_s = fixed_s
        self.per_item_s = per_item_s
        self.slowdown = 1.0
        self.runs = 0

    def __call__(self, inputs: Arrays) -> Arrays:
        self.runs += 1
        time.sleep((self.fixed_s + self.per_item_s * inputs["x"].shape[0]) * self.slowdown)
        return {"y": inputs["x"] * 2}


class Recorder:
    """A batch observer that counts refusals by reason."""

    def __init__(self) -> None:
        self.shed: dict[str, int] = {}

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        pass

    def on_queue_depth(self, items: int) -> None:
        pass

    def on_shed(self, reason: str) -> None:
        self.shed[reason] = self.shed.get(reason, 0) + 1


async def _timed(batcher: Batcher, request: Arrays, timeout_s: float) -> tuple[Any, float, float]:
    """(result or exception, seconds until it resolved, its timeout)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result: Any = await batcher.submit(request, request["x"].shape[0], started + timeout_s)
    except ModelfleetError as exc:
        result = exc
    return result, loop.time() - started, timeout_s


async def test_request_that_would_miss_its_deadline_is_refused_at_once() -> None:
    recorder = Recorder()
    model = LinearModel(fixed_s=0.005, per_item_s=0.005)  # 4 items: 25 ms, 160 items/s
    batcher = Batcher(
        model,
        max_batch_size=4,
        max_delay_s=0.0,
        max_queue_items=1000,
        max_queue_wait_s=10.0,
        observer=recorder,
    )
    batcher.seed([(1, 0.02)])  # measured at load: 50 items/s
    batcher.start()
    results = await asyncio.gather(*(_timed(batcher, _rows(1.0), 0.51) for _ in range(60)))
    served = [r for r, _, _ in results if isinstance(r, dict)]
    refused = [(r, s) for r, s, _ in results if isinstance(r, Unavailable)]
    # The n-th request expects to finish n / 50 s from now: 25 fit in 0.51 s, the rest are refused.
    assert len(served) == 25 and len(refused) == 35
    assert all(elapsed_s < 0.05 for _, elapsed_s in refused), "a refusal must not wait for the model"
    first = refused[0][0]
    assert "deadline" in first.message and "overloaded" in first.message
    # Retry when the backlog (25 items ahead at 50/s) has drained to what the deadline allows (24.5).
    assert first.retry_after_s == pytest.approx(0.5 / 50, rel=0.05)
    assert recorder.shed == {"deadline": 35}
    await batcher.close()


@pytest.mark.parametrize(
    ("max_queue_wait_s", "limit_s", "served"),
    [(None, 2.5 * 0.02, 4), (0.11, 0.11, 7)],
    ids=["auto-from-unshared-run-time", "explicit"],
)
async def test_a_burst_is_served_but_a_standing_queue_is_cut_to_the_wait_target(
    max_queue_wait_s: float | None, limit_s: float, served: int
) -> None:
    recorder = Recorder()
    model = LinearModel(fixed_s=0.03, per_item_s=0.005)  # 4 items: 50 ms
    batcher = Batcher(
        model,
        max_batch_size=4,
        max_delay_s=0.0,
        max_queue_items=1000,
        max_queue_wait_s=max_queue_wait_s,
        queue_wait_runs=2.5,
        observer=recorder,
    )
    batcher.seed([(1, 0.02)])  # an unshared run took 20 ms; one size seen reads as 20 ms per item
    batcher.start()
    assert batcher.queue_wait_limit_s() == pytest.approx(limit_s)
    # The n-th of a burst expects to finish in n × 20 ms. Nothing was refused yet, so the burst may pass the
    # target by half a batch (2 items: 40 ms): auto 50 + 40 ms lets 4 in, explicit 110 + 40 ms lets 7 in.
    results = await asyncio.gather(*(_timed(batcher, _rows(1.0), 10.0) for _ in range(12)))
    assert all(isinstance(r, dict) for r, _, _ in results[:served]), "a burst is not refused"
    refused = [(r, s) for r, s, _ in results[served:]]
    for result, elapsed_s in refused:
        assert isinstance(result, Unavailable) and elapsed_s < 0.05
        assert "max_queue_wait_s" in result.message and result.retry_after_s
        assert 0 < result.retry_after_s < 1.0  # until the backlog has drained to the target
    assert recorder.shed == {"queue_wait": 12 - served}
    await asyncio.sleep(0.3)  # the burst's runs end
    # Once nothing has been refused for STANDING_QUEUE_S past the last retry-after, a burst is served again.
    await asyncio.sleep(STANDING_QUEUE_S + 0.05)
    again = await asyncio.gather(*(_timed(batcher, _rows(1.0), 10.0) for _ in range(4)))
    assert all(isinstance(r, dict) for r, _, _ in again)
    await batcher.close()


async def test_once_it_refuses_a_model_holds_its_queue_to_the_target_itself() -> None:
    recorder = Recorder()
    model = LinearModel(fixed_s=0.01, per_item_s=0.01)
    batcher = Batcher(
        model, max_batch_size=4, max_delay_s=0.0, max_queue_items=1000, queue_wait_runs=2.5, observer=recorder
    )
    batcher.seed([(1, 0.02)])  # target 50 ms; a burst may add 2 items' worth (40 ms) while nothing is refused
    batcher.start()
    # A lone request; a 5-item one, more than a batch, that needs a run of its own after it (180 ms:
    # refused; a request that fits the next batch is let in while nothing was refused); then two lone ones
    # expecting 40 and 60 ms. The burst allowance would let the last in, but the model just refused.
    sizes = [1, 5, 1, 1]
    outcomes = await asyncio.gather(*(_timed(batcher, _rows(1.0, items), 10.0) for items in sizes))
    assert [type(r).__name__ for r, _, _ in outcomes] == ["dict", "Unavailable", "dict", "Unavailable"]
    assert recorder.shed == {"queue_wait": 2}
    await batcher.close()


async def test_a_burst_that_fits_one_batch_is_admitted_as_one_run_not_as_lone_runs() -> None:
    recorder = Recorder()
    model = LinearModel(fixed_s=0.008, per_item_s=0.001)  # 16 items in one run: 24 ms; 16 lone runs: 144 ms
    batcher = Batcher(
        model,
        max_batch_size=16,
        max_delay_s=0.0,
        max_queue_items=1000,
        max_queue_wait_s=0.03,
        observer=recorder,
    )
    batcher.seed([(1, 0.009), (16, 0.024)])  # the warm-up's two sizes give the line
    assert batcher.service.run_cost_s(16) < 0.03 < 16 * batcher.service.run_cost_s(1)
    batcher.start()
    results = await asyncio.gather(*(_timed(batcher, _rows(1.0), 10.0) for _ in range(32)))
    assert all(isinstance(r, dict) for r, _, _ in results[:16]), "one batch's worth of clients is served"
    refused = [r for r, _, _ in results if isinstance(r, Unavailable)]
    assert refused and recorder.shed == {"queue_wait": len(refused)}, "a second batch's worth does not fit"
    await batcher.close()


def _one_run_target(
    model: LinearModel, max_batch_size: int, runs: list[tuple[int, float]], recorder: Recorder
) -> Batcher:
    """A started batcher whose queue-wait target is one unshared run, seeded with `runs`."""
    batcher = Batcher(
        model,
        max_batch_size=max_batch_size,
        max_delay_s=0.0,
        max_queue_items=1000,
        queue_wait_runs=1.0,
        observer=recorder,
    )
    batcher.seed(runs)
    batcher.start()
    return batcher


async def test_a_request_that_fits_the_next_batch_is_admitted_behind_an_overdue_run() -> None:
    model = LinearModel(fixed_s=0.020, per_item_s=0.005)
    # Target 25 ms; a burst may add 4 items' worth (40 ms).
    recorder = Recorder()
    batcher = _one_run_target(model, 8, [(1, 0.025), (8, 0.060)], recorder)
    model.slowdown = 4.0  # the machine got busy: the one-item run takes 100 ms, not 25
    first = asyncio.ensure_future(_timed(batcher, _rows(1.0), 10.0))
    await asyncio.sleep(0.050)  # the run in flight is 2x overdue
    # 1 + 7 items fit the next batch: let in, whatever its estimate, as closed-loop clients need.
    result, _, _ = await _timed(batcher, _rows(1.0, 7), 10.0)
    assert isinstance((await first)[0], dict)
    assert isinstance(result, dict), result
    assert recorder.shed == {}
    await batcher.close()


async def test_an_impatient_request_passes_the_target_within_two_batches_only() -> None:
    # Target 10 ms; a burst may add 2 items' worth (20 ms).
    recorder = Recorder()
    model = LinearModel(fixed_s=0.0, per_item_s=0.010)
    batcher = _one_run_target(model, 4, [(1, 0.010), (4, 0.040)], recorder)
    first = asyncio.ensure_future(_timed(batcher, _rows(1.0, 4), 10.0))  # a full run in flight, 40 ms
    await asyncio.sleep(0.005)
    patient, _, _ = await _timed(batcher, _rows(1.0, 3), 10.0)  # 3 more behind it, ~65 ms: refused
    assert isinstance(patient, Unavailable)

    async def impatient(items: int) -> Any:
        return await batcher.submit(
            _rows(1.0, items), items, asyncio.get_running_loop().time() + 10, None, True
        )

    queued = asyncio.ensure_future(impatient(3))  # 4 + 3 outstanding: within two batches
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="max_queue_wait_s"):
        await impatient(2)  # 4 + 3 + 2: past two batches, the target applies again
    assert isinstance((await first)[0], dict) and (await queued)["y"].shape[0] == 3
    assert recorder.shed == {"queue_wait": 2}
    await batcher.close()


async def test_a_request_cancelled_while_queued_is_uncounted_at_once_and_never_run() -> None:
    # Its client hung up (the server cancels its task): the clients that take its place must not read
    # as an excess while it waits to be dropped, and its rows must not be computed for nobody.
    model = LinearModel(fixed_s=0.0, per_item_s=0.020)
    batcher = Batcher(model, max_batch_size=4, max_delay_s=0.0, max_queue_items=1000, queue_wait_runs=100.0)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(_rows(1.0, 4), 4, asyncio.get_running_loop().time() + 10))
    await asyncio.sleep(0.01)  # its run (80 ms) is in flight
    gone = asyncio.ensure_future(batcher.submit(_rows(2.0, 3), 3, asyncio.get_running_loop().time() + 10))
    await asyncio.sleep(0)
    assert batcher._queued_items == 3
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert batcher._queued_items == 0
    kept = await batcher.submit(_rows(3.0, 1), 1, asyncio.get_running_loop().time() + 10)
    assert kept["y"].tolist() == [[6.0, 6.0]]
    assert (await first)["y"].shape[0] == 4
    assert model.runs == 2  # the first batch and the kept request: the cancelled rows never ran
    assert batcher._queued_items == 0
    await batcher.close()


async def test_cold_model_admits_by_the_items_bound_only() -> None:
    model = LinearModel(fixed_s=0.002, per_item_s=0.001)
    batcher = Batcher(model, max_batch_size=4, max_delay_s=0.0, max_queue_items=10, max_queue_wait_s=0.001)
    batcher.start()
    results = await asyncio.gather(*(_timed(batcher, _rows(1.0), 5.0) for _ in range(14)))
    refused = [r for r, _, _ in results if isinstance(r, Unavailable)]
    assert len(refused) == 4 and "max_queue_items" in refused[0].message
    assert all(isinstance(r, dict) for r, _, _ in results[:10])
    await batcher.close()


async def test_idle_model_admits_even_when_its_estimate_is_stale() -> None:
    model = LinearModel(fixed_s=0.001, per_item_s=0.001)
    batcher = Batcher(model, max_batch_size=8, max_delay_s=0.0, max_queue_items=1000)
    batcher.seed([(1, 5.0)])  # once 5 s per item: now ~500 items/s
    batcher.start()
    result, _, _ = await _timed(batcher, _rows(1.0), 0.5)
    assert isinstance(result, dict), "an idle model must run the request that corrects its estimate"
    for _ in range(40):  # each run moves the estimate a quarter of the way toward the real speed
        await _timed(batcher, _rows(1.0), 0.5)
    assert batcher.service.items_per_s > 100
    assert batcher.queue_wait_limit_s() < 0.05
    await batcher.close()


async def test_a_tiny_model_stalled_once_by_the_scheduler_refuses_nobody() -> None:
    recorder = Recorder()
    model = LinearModel(fixed_s=0.0001, per_item_s=0.00001)  # iris-sized: 0.1-0.2 ms a run
    batcher = Batcher(model, max_batch_size=8, max_delay_s=0.0, max_queue_items=1000, observer=recorder)
    batcher.seed([(1, 0.00011), (8, 0.00018)])
    batcher.start()
    model.slowdown = 60.0  # the next run takes ~7 ms, as when its thread waits for a core
    first = asyncio.ensure_future(_timed(batcher, _rows(1.0), 1.0))
    while model.runs == 0:
        await asyncio.sleep(0)
    model.slowdown = 1.0
    await asyncio.sleep(0.005)  # 5 ms into the stall: overdue ~50x a run, one scheduler quantum late
    results = await asyncio.gather(*(_timed(batcher, _rows(1.0), 1.0) for _ in range(24)))
    assert isinstance((await first)[0], dict)
    assert all(isinstance(r, dict) for r, _, _ in results), recorder.shed
    assert recorder.shed == {}
    await batcher.close()


# Serial: it compares latencies (p90 during ÷ before); beside another test file's servers on 2 cores it
# failed once in a parallel run this session and passed alone and in the fresh-clone run.
@pytest.mark.serial
async def test_a_model_made_10x_slower_sheds_at_once_and_another_model_keeps_its_latency() -> None:
    slow_model = LinearModel(fixed_s=0.002, per_item_s=0.002)
    fast_model = LinearModel(fixed_s=0.002, per_item_s=0.002)
    recorder = Recorder()
    slow = Batcher(slow_model, max_batch_size=4, max_delay_s=0.0, max_queue_items=1000, observer=recorder)
    fast = Batcher(fast_model, max_batch_size=4, max_delay_s=0.0, max_queue_items=1000)
    slow.start()
    fast.start()
    loop = asyncio.get_running_loop()

    async def drive(batcher: Batcher, interval_s: float, duration_s: float) -> list[tuple[Any, float, float]]:
        tasks = []
        end = loop.time() + duration_s
        while loop.time() < end:
            tasks.append(loop.create_task(_timed(batcher, _rows(1.0), 0.25)))
            await asyncio.sleep(interval_s)
        return list(await asyncio.gather(*tasks))

    # Both at 50 requests/s, a fifth of what a 4 ms run per request allows.
    before, _ = await asyncio.gather(drive(fast, 0.02, 0.5), drive(slow, 0.02, 0.5))
    slow_model.slowdown = 10.0  # now 40 ms per item alone, at most 4 items per 60 ms run: ~65 items/s
    during, shed = await asyncio.gather(drive(fast, 0.02, 1.0), drive(slow, 0.005, 1.0))

    for result, elapsed_s, timeout_s in shed:
        assert elapsed_s < timeout_s + 0.05, f"{type(result).__name__} after {elapsed_s:.3f} s"
    refused = [r for r, _, _ in shed if isinstance(r, Unavailable)]
    timed_out = [r for r, _, _ in shed if isinstance(r, DeadlineExceeded)]
    assert len(refused) > len(shed) // 2, "the excess of a slowed model is refused at admission"
    assert len(timed_out) <= len(shed) // 10, "no 504 storm: the estimate follows the slowdown"
    assert recorder.shed.get("queue_wait", 0) + recorder.shed.get("deadline", 0) == len(refused)

    def p90(results: list[tuple[Any, float, float]]) -> float:
        assert all(isinstance(r, dict) for r, _, _ in results), [str(r) for r, _, _ in results]
        return float(np.percentile([s for _, s, _ in results], 90))

    assert p90(during) <= 3 * p90(before) + 0.01, "a slow model must not hold up another"
    await slow.close()
    await fast.close()


# -- the cost model -------------------------------------------------------------------------------------


def _linear_s(items: int) -> float:
    return 0.0025 + 0.0019 * items  # MiniLM fp32 on two threads, measured


def test_cost_model_fits_fixed_and_per_item_cost_from_runs_of_varied_size() -> None:
    service = ServiceEstimate()
    for items in [1, 32, 4, 16, 8, 2] * 3:
        service.record(items, _linear_s(items), unshared=False)
    assert service.fixed_s == pytest.approx(0.0025, rel=0.05)
    assert service.per_item_s == pytest.approx(0.0019, rel=0.05)
    assert service.run_cost_s(16) == pytest.approx(_linear_s(16), rel=0.02)


def test_cost_model_keeps_its_slope_while_every_run_holds_one_item() -> None:
    service = ServiceEstimate()
    for items in (1, 32):  # the warm-up
        service.record(items, _linear_s(items), unshared=items == 1)
    for i in range(500):  # an unloaded model runs lone requests, with some jitter
        service.record(1, _linear_s(1) * (1.1 if i % 2 else 0.9), unshared=True)
    assert service.run_cost_s(1) == pytest.approx(_linear_s(1), rel=0.15)
    assert service.run_cost_s(32) == pytest.approx(_linear_s(32), rel=0.1), "a full batch is not 32 lone runs"
    assert service.solo_s == pytest.approx(_linear_s(1), rel=0.15)


def test_cost_model_reads_one_size_as_proportional_and_never_negative() -> None:
    service = ServiceEstimate()
    service.record(4, 0.02, unshared=True)
    assert service.fixed_s == 0 and service.run_cost_s(8) == pytest.approx(0.04)  # pessimistic for more
    for items, seconds in [(1, 0.03), (8, 0.01), (16, 0.005)] * 4:  # larger runs faster: noise, not a model
        service.record(items, seconds, unshared=False)
        assert service.fixed_s >= 0 and service.per_item_s >= 0
        assert service.run_cost_s(1) > 0


def test_cost_model_follows_a_model_that_became_10x_slower_within_a_few_runs() -> None:
    service = ServiceEstimate()
    for items in [1, 32, 4, 16, 8, 2] * 3:
        service.record(items, _linear_s(items), unshared=False)
    for _ in range(4):
        service.record(8, 10 * _linear_s(8), unshared=False)
    assert service.run_cost_s(8) > 5 * _linear_s(8)
