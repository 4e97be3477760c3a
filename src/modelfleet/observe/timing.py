"""When each step of one inference happened, for its trace (observe/tracing.py builds the spans).

Filled only while tracing is on: the route sets `received`, `decoded`, `answered` and `encoded`, the
batcher the batch's times and size. Plain floats from time.monotonic() (not the event loop's clock:
uvloop's advances in whole milliseconds, coarser than a small model's run).
"""

from __future__ import annotations


class InferTiming:
    __slots__ = (
        "answered",
        "batch_done",
        "batch_items",
        "batch_requests",
        "batch_started",
        "decoded",
        "encoded",
        "received",
        "run_finished",
        "run_started",
    )

    def __init__(self, received: float) -> None:
        self.received = received
        self.decoded = 0.0
        self.batch_started = 0.0  # the batch this request joined was taken from the queue
        self.run_started = 0.0
        self.run_finished = 0.0
        self.batch_done = 0.0  # its rows handed back
        self.batch_items = 0
        self.batch_requests = 0
        self.answered = 0.0  # the dataplane returned its outputs
        self.encoded = 0.0

    @property
    def queue_ms(self) -> float:
        return round(max(0.0, self.batch_started - self.decoded) * 1000, 3)
