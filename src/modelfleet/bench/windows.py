"""A point's latency record: per-window and total HDR histograms, filled in bulk and closed in small steps.

The generator's event loop also has sends to make on time, so nothing here may hold it for long:
- each response appends two integers to a flat buffer; the buffer goes into the histograms in bulk
  (numpy) every ``FLUSH_AT`` values, a fraction of a millisecond;
- closing a window (encode both histograms for the results, a p99 for the stability check, add into
  the totals, clear for reuse) is queued as steps that run one per loop iteration, so timers that
  fall due in between still fire; a closed window's histograms are swapped out at once, so the new
  window records into a clean pair while the old one is still being processed;
- histograms are cleared and reused rather than allocated: fresh counters fault their pages in
  again, which is what made a window close cost milliseconds on a virtual machine.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from modelfleet.bench import stats
from modelfleet.bench.results import WindowRaw

# ~0.1 ms of numpy per flush; bounds the buffers at 32 KiB each.
FLUSH_AT = 4_096


class LatencyWindows:
    """What one point measured, window by window and in total. Call ``finish`` before reading totals."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window_s: float,
        keep_recent: int,
        endpoint_count: int,
        on_window: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.window_s = window_s
        self._keep_recent = keep_recent
        self._on_window = on_window
        self.index = 0
        self._ok = self._errors = 0
        self._corrected, self._uncorrected = stats.new_histogram(), stats.new_histogram()
        self._spare: list[tuple[HdrHistogram, HdrHistogram]] = []
        self._pending_corrected = array("q")
        self._pending_uncorrected = array("q")
        self._pending_endpoint = array("I")
        # With one endpoint its histogram is the point's own; no need to record every value twice.
        self.endpoint_histograms = (
            [stats.new_histogram() for _ in range(endpoint_count)] if endpoint_count > 1 else None
        )
        self.total_corrected = stats.new_histogram()
        self.total_uncorrected = stats.new_histogram()
        self.windows: list[WindowRaw] = []
        self.recent_rates: list[float] = []
        self.recent_p99_ms: list[float | None] = []
        self._steps: deque[Callable[[], None]] = deque()

    # --- recording (every response) ----------------------------------------------------------------

    def ok(self, corrected_us: int, uncorrected_us: int, endpoint: int) -> None:
        self._ok += 1
        pending = self._pending_corrected
        pending.append(corrected_us)
        self._pending_uncorrected.append(uncorrected_us)
        if self.endpoint_histograms is not None:
            self._pending_endpoint.append(endpoint)
        if len(pending) >= FLUSH_AT:
            self._flush()

    def error(self) -> None:
        self._errors += 1

    def _flush(self) -> None:
        if not self._pending_corrected:
            return
        corrected = np.frombuffer(self._pending_corrected, dtype=np.int64)
        stats.record_many_us(self._corrected, corrected)
        stats.record_many_us(self._uncorrected, np.frombuffer(self._pending_uncorrected, dtype=np.int64))
        if self.endpoint_histograms is not None:
            endpoints = np.frombuffer(self._pending_endpoint, dtype=np.uint32)
            for number in np.unique(endpoints):
                stats.record_many_us(self.endpoint_histograms[int(number)], corrected[endpoints == number])
        # New buffers: the old ones back the numpy views above, and an exported buffer cannot be resized.
        self._pending_corrected = array("q")
        self._pending_uncorrected = array("q")
        self._pending_endpoint = array("I")

    # --- windows ------------------------------------------------------------------------------------

    def roll_to(self, new_index: int) -> None:
        """Close every window before ``new_index`` (a completion landed there)."""
        while self.index < new_index:
            self.close(self.window_s)
            self.index += 1

    def close(self, length_s: float) -> None:
        """Close the current window; its processing is queued and runs a step per loop iteration."""
        self._flush()
        index, ok, errors = self.index, self._ok, self._errors
        self._ok = self._errors = 0
        if self._corrected.get_total_count() == 0:
            self._queue(lambda: self._publish(index, length_s, ok, errors, None, None, None))
            return
        corrected, uncorrected = self._corrected, self._uncorrected
        self._corrected, self._uncorrected = (
            self._spare.pop() if self._spare else (stats.new_histogram(), stats.new_histogram())
        )
        encoded: dict[str, Any] = {}

        def encode_corrected() -> None:
            encoded["corrected"] = stats.encode(corrected)
            encoded["p99_ms"] = stats.values_at_percentiles_us(corrected, (99.0,))[0] / 1000.0

        def encode_uncorrected() -> None:
            encoded["uncorrected"] = stats.encode(uncorrected)

        def add_corrected() -> None:
            stats.add_into(self.total_corrected, corrected)

        def add_uncorrected_and_recycle() -> None:
            stats.add_into(self.total_uncorrected, uncorrected)
            stats.reset(corrected)
            stats.reset(uncorrected)
            self._spare.append((corrected, uncorrected))

        def publish() -> None:
            self._publish(
                index, length_s, ok, errors, encoded["corrected"], encoded["uncorrected"], encoded["p99_ms"]
            )

        for step in (
            encode_corrected,
            encode_uncorrected,
            add_corrected,
            add_uncorrected_and_recycle,
            publish,
        ):
            self._queue(step)

    def _publish(
        self,
        index: int,
        length_s: float,
        ok: int,
        errors: int,
        corrected: str | None,
        uncorrected: str | None,
        p99_ms: float | None,
    ) -> None:
        self.windows.append(
            WindowRaw(
                index=index,
                length_s=length_s,
                ok=ok,
                errors=errors,
                corrected=corrected,
                uncorrected=uncorrected,
            )
        )
        self.recent_rates.append(ok / length_s if length_s > 0 else 0.0)
        self.recent_p99_ms.append(p99_ms)
        del self.recent_rates[: -self._keep_recent], self.recent_p99_ms[: -self._keep_recent]
        self._on_window()

    def _queue(self, step: Callable[[], None]) -> None:
        self._steps.append(step)
        if len(self._steps) == 1:
            self._loop.call_soon(self._run_step)

    def _run_step(self) -> None:
        if self._steps:
            self._steps.popleft()()
        if self._steps:
            self._loop.call_soon(self._run_step)

    def finish(self) -> None:
        """Run whatever is still queued, now: the point is over and its results are wanted."""
        while self._steps:
            self._steps.popleft()()
