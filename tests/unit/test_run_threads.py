"""The model-run threads: results and exceptions come back on the loop, threads start on demand."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modelfleet.server.run_threads import RunThreads


async def test_a_run_returns_its_result_from_another_thread_and_raises_its_exception() -> None:
    threads = RunThreads(1, "run-t")
    try:
        assert await threads.run(lambda x: (x * 2, threading.current_thread().name), 21) == (42, "run-t_0")

        def fail(_: object) -> None:
            raise ValueError("bad feed")

        with pytest.raises(ValueError, match="bad feed"):
            await threads.run(fail, None)
    finally:
        threads.shutdown()


async def test_threads_start_only_as_runs_need_them_and_at_most_count() -> None:
    threads = RunThreads(2, "run-lazy")
    assert threads._threads == []  # a batcher that never runs costs no thread
    started = time.monotonic()
    names = await asyncio.gather(
        *(threads.run(lambda _: (time.sleep(0.1), threading.current_thread().name)[1], i) for i in range(4))
    )
    elapsed_s = time.monotonic() - started
    threads.shutdown()
    assert sorted(set(names)) == ["run-lazy_0", "run-lazy_1"]
    assert 0.2 <= elapsed_s < 0.35, "four 0.1 s runs on two threads take two rounds"
    with pytest.raises(RuntimeError, match="shut down"):
        threads.run(lambda x: x, 1)


async def test_a_cancelled_wait_leaves_the_thread_serving() -> None:
    threads = RunThreads(1, "run-c")
    try:
        waiting = asyncio.ensure_future(threads.run(lambda _: time.sleep(0.05), None))
        await asyncio.sleep(0)
        waiting.cancel()
        assert await threads.run(lambda x: x + 1, 1) == 2
    finally:
        threads.shutdown()
