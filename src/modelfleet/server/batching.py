"""Dynamic batching for one model: a pure asyncio unit with no HTTP and no model knowledge.

A batch closes when it holds `max_batch_size` items or `max_delay_s` after its first request arrived.
With `dispatch_when_idle` (the default) an idle model starts at once instead of waiting: at low load no
request pays the delay, and under load batches still form from the requests that queue during a run.
The model runs in a worker thread so the event loop keeps accepting; while a run is in flight the
queue keeps filling, so the next batch is ready the moment the run ends. The queue is bounded:
beyond `max_queue_items` a request is refused at once (503 + Retry-After) instead of waiting for
a deadline it cannot meet. Requests whose deadline passed while queued are failed, not run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelfleet.errors import DeadlineExceeded, ModelfleetError, Unavailable

Arrays = dict[str, np.ndarray[Any, Any]]


class BatchObserver(Protocol):
    """Receives timings; the server plugs Prometheus metrics in here."""

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None: ...

    def on_queue_depth(self, items: int) -> None: ...


class _NullObserver:
    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        pass

    def on_queue_depth(self, items: int) -> None:
        pass


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    items: int
    future: asyncio.Future[Arrays]
    enqueued_at: float
    # Requests whose non-batch dimensions differ cannot share a run; this tells them apart.
    signature: tuple[Any, ...] = field(default=())


def _signature(inputs: Arrays) -> tuple[Any, ...]:
    return tuple((name, array.shape[1:], array.dtype.str) for name, array in inputs.items())


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[Arrays], Arrays],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_items: int,
        instances: int = 1,
        dispatch_when_idle: bool = True,
        observer: BatchObserver | None = None,
        name: str = "model",
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.dispatch_when_idle = dispatch_when_idle
        self.max_queue_items = max_queue_items
        self._instances = instances
        self._observer: BatchObserver = observer or _NullObserver()
        self._name = name
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_items = 0
        self._arrived = asyncio.Event()  # something was queued
        self._full = asyncio.Event()  # a whole batch is waiting
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"run-{name}")
        self._workers: list[asyncio.Task[None]] = []
        self._inflight = 0
        self._mean_batch_s = 0.01  # running estimate, for Retry-After
        self._closed = False

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def busy(self) -> bool:
        return self._inflight > 0 or bool(self._queue)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"batcher-{self._name}-{i}") for i in range(self._instances)
        ]

    async def submit(self, inputs: Arrays, items: int, deadline: float) -> Arrays:
        """Queue a request of `items` rows; resolve with its rows of the outputs. `deadline` is loop time."""
        if self._closed:
            raise Unavailable(f"model {self._name} is shutting down", retry_after_s=1.0)
        if self._queued_items + items > self.max_queue_items and self._queued_items > 0:
            raise Unavailable(
                f"model {self._name} is overloaded: {self._queued_items} items queued (max_queue_items "
                f"{self.max_queue_items}); retry later or add replicas",
                retry_after_s=self._retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        self._queue.append(_Pending(inputs, items, future, loop.time(), _signature(inputs)))
        self._queued_items += items
        self._arrived.set()
        if self._queued_items >= self.max_batch_size:
            self._full.set()
        timer = loop.call_at(deadline, _expire, future, self._name)
        try:
            return await future
        finally:
            timer.cancel()

    def _retry_after_s(self) -> float:
        batches_ahead = self._queued_items / max(1, self.max_batch_size * self._instances)
        return max(0.05, batches_ahead * self._mean_batch_s)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            idle = self._inflight == 0
            if (
                self._queued_items < self.max_batch_size
                and self.max_delay_s > 0
                and not (self.dispatch_when_idle and idle)
            ):
                close_at = self._queue[0].enqueued_at + self.max_delay_s
                remaining = close_at - loop.time()
                if remaining > 0:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._take_batch()
            if not batch:
                continue
            await self._run(batch, loop)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        skipped: list[_Pending] = []
        items = 0
        signature: tuple[Any, ...] | None = None
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # expired or cancelled while queued: drop it
                self._queue.popleft()
                self._queued_items -= pending.items
                continue
            if signature is None:
                signature = pending.signature
            if items and items + pending.items > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= pending.items
            if pending.signature != signature:
                skipped.append(pending)
                self._queued_items += pending.items
                continue
            batch.append(pending)
            items += pending.items
            if items >= self.max_batch_size:
                break
        # Requests of another shape keep their place at the front for the next batch.
        self._queue.extendleft(reversed(skipped))
        if self._queued_items < self.max_batch_size:
            self._full.clear()
        self._observer.on_queue_depth(self._queued_items)
        return batch

    async def _run(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        queue_s = [started - pending.enqueued_at for pending in batch]
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        total_items = sum(p.items for p in batch)
        self._inflight += 1
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, merged)
        except ModelfleetError as exc:
            _fail_all(batch, exc)
            return
        except Exception as exc:
            _fail_all(batch, ModelfleetError(f"model {self._name} failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self._inflight -= 1
        compute_s = loop.time() - started
        self._mean_batch_s = 0.8 * self._mean_batch_s + 0.2 * compute_s
        self._observer.on_batch(total_items, len(batch), compute_s, queue_s)

        wrong = [name for name, array in outputs.items() if array.shape[:1] != (total_items,)]
        if wrong:
            shapes = {name: list(outputs[name].shape) for name in wrong}
            _fail_all(
                batch,
                ModelfleetError(
                    f"model {self._name} returned outputs {shapes} for a batch of {total_items} items: "
                    "every output's first dimension must equal the batch size"
                ),
            )
            return
        offset = 0
        for pending in batch:
            end = offset + pending.items
            if not pending.future.done():
                pending.future.set_result({name: array[offset:end] for name, array in outputs.items()})
            offset = end

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new work and wait for queued and running requests to finish."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._closed = True
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    Unavailable(f"model {self._name} was unloaded", retry_after_s=1.0)
                )
        self._queued_items = 0
        self._executor.shutdown(wait=True)


def _expire(future: asyncio.Future[Arrays], name: str) -> None:
    if not future.done():
        future.set_exception(
            DeadlineExceeded(f"model {name}: request deadline passed before a result was ready")
        )


def _fail_all(batch: list[_Pending], error: ModelfleetError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
