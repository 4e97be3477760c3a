"""A point's latency windows: closed in steps between other loop work, same figures as recording at once."""

from __future__ import annotations

import asyncio
import random

from modelfleet.bench import stats
from modelfleet.bench.windows import FLUSH_AT, LatencyWindows


async def test_windows_close_in_steps_and_add_up_to_the_totals() -> None:
    loop = asyncio.get_running_loop()
    closed: list[int] = []
    windows = LatencyWindows(
        loop, window_s=1.0, keep_recent=3, endpoint_count=2, on_window=lambda: closed.append(1)
    )
    rng = random.Random(3)
    everything, per_window = stats.new_histogram(), []
    for index in range(4):
        windows.roll_to(index)
        values = [rng.randint(50, 50_000) for _ in range(FLUSH_AT + 1_000)]  # crosses a flush
        for value in values:
            windows.ok(value, value // 2, rng.randrange(2))
            everything.record_value(value)
        windows.error()
        per_window.append(values)
        # Closing queues its work; the loop runs other callbacks (due sends) between the steps.
        interleaved: list[int] = []
        loop.call_soon(interleaved.append, 1)
        await asyncio.sleep(0)
        assert interleaved == [1]
    windows.close(0.5)
    assert len(windows.windows) < 4, "the last windows are still queued"
    windows.finish()

    assert [w.index for w in windows.windows] == [0, 1, 2, 3]
    assert [w.ok for w in windows.windows] == [FLUSH_AT + 1_000] * 4
    assert [w.errors for w in windows.windows] == [1] * 4
    assert windows.windows[-1].length_s == 0.5
    assert len(closed) == 4
    for window, values in zip(windows.windows, per_window, strict=True):
        assert window.corrected is not None
        alone = stats.new_histogram()
        for value in values:
            alone.record_value(value)
        assert window.corrected == stats.encode(alone), "a recycled histogram carries nothing over"
    assert stats.encode(windows.total_corrected) == stats.encode(everything)
    assert windows.total_uncorrected.get_total_count() == everything.get_total_count()
    assert windows.endpoint_histograms is not None
    assert sum(h.get_total_count() for h in windows.endpoint_histograms) == everything.get_total_count()
    assert windows.recent_rates == [FLUSH_AT + 1_000, FLUSH_AT + 1_000, (FLUSH_AT + 1_000) / 0.5]


async def test_an_empty_window_is_published_without_histograms() -> None:
    windows = LatencyWindows(asyncio.get_running_loop(), 1.0, 3, 1, lambda: None)
    windows.roll_to(2)
    windows.finish()
    assert [(w.index, w.ok, w.corrected) for w in windows.windows] == [(0, 0, None), (1, 0, None)]
    assert windows.recent_p99_ms == [None, None]
