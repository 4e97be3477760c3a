"""Dynamic batching and admission for one model: a pure asyncio unit with no HTTP and no model knowledge.

A batch closes when it holds `max_batch_size` items or `max_delay_s` after its first request arrived.
With `dispatch_when_idle` (the default) an idle model starts at once instead of waiting: at low load no
request pays the delay, and under load batches still form from the requests that queue during a run.
The model runs in a worker thread so the event loop keeps accepting; while a run is in flight the
queue keeps filling, so the next batch is ready the moment the run ends.

Admission (docs/serve.md, "Overload and admission"): the queue is bounded by time, not only by items.
Each run's items and compute time feed a throughput estimate; a new request's expected wait is the work
ahead of it (queued + in-flight items) divided by that throughput. It is refused at once (503 with a
Retry-After computed from the backlog) when it would not finish by its deadline, or when its wait would
pass the queue-wait target. `max_queue_items` stays the hard memory bound. A request whose deadline
passes anyway is failed by a timer at its deadline (504), queued or running, never later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from modelfleet.errors import DeadlineExceeded, ModelfleetError, Unavailable
from modelfleet.types import Arrays

ShedReason = Literal["queue_full", "queue_wait", "deadline", "expired"]
SHED_REASONS: tuple[ShedReason, ...] = ("queue_full", "queue_wait", "deadline", "expired")

# Each run's share of the estimates. 0.25 lets a model that became 10x slower show it within a few runs
# (after 3 runs the estimate is ~5x slower; an overdue run counts at once, see `_items_per_s`) while one
# odd run moves the estimate by a quarter at most.
_RUN_WEIGHT = 0.25
_MIN_RETRY_AFTER_S = 0.001
# The automatic queue-wait target never goes below this: under a few milliseconds, event-loop and
# thread hand-off jitter alone would make a lightly loaded tiny model refuse.
MIN_AUTO_QUEUE_WAIT_S = 0.005
# How long runs must keep starting with their oldest request over the queue-wait target before the target
# is enforced: CoDel's interval (100 ms). A burst of concurrent clients is served, not refused; a standing
# queue (sustained overload) is cut back to the target within this time.
STANDING_QUEUE_S = 0.1


class BatchObserver(Protocol):
    """Receives timings and refusals; the server plugs Prometheus metrics in here."""

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None: ...

    def on_queue_depth(self, items: int) -> None: ...

    def on_shed(self, reason: ShedReason) -> None: ...


class _NullObserver:
    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        pass

    def on_queue_depth(self, items: int) -> None:
        pass

    def on_shed(self, reason: ShedReason) -> None:
        pass


class ServiceEstimate:
    """What this model's runs cost, measured; O(1) per run, no allocation.

    `items_per_s` is the ratio of two moving averages (items per run, compute seconds per run), i.e. a
    ratio of weighted sums: a run's weight does not depend on how few items it held, so a one-item
    straggler does not swing it as an average of per-run ratios would. `solo_s` averages the compute
    time of runs that held a single request: what a request costs when it shares nothing, the
    unloaded service time that the automatic queue-wait target is a multiple of. It is not fed by the
    larger batches of an overload, so the target cannot grow with the batches it admits.
    """

    __slots__ = ("items", "runs", "seconds", "solo_s")

    def __init__(self) -> None:
        self.items = 0.0
        self.seconds = 0.0
        self.solo_s = 0.0
        self.runs = 0

    def record(self, items: int, compute_s: float, unshared: bool) -> None:
        compute_s = max(compute_s, 1e-6)
        if self.runs == 0:
            self.items, self.seconds = float(items), compute_s
        else:
            self.items += _RUN_WEIGHT * (items - self.items)
            self.seconds += _RUN_WEIGHT * (compute_s - self.seconds)
        if unshared:
            self.solo_s = (
                compute_s if self.solo_s == 0 else self.solo_s + _RUN_WEIGHT * (compute_s - self.solo_s)
            )
        self.runs += 1

    @property
    def known(self) -> bool:
        return self.runs > 0

    @property
    def items_per_s(self) -> float:
        """Items one instance completes per second (meaningful once `known`)."""
        return self.items / self.seconds

    @property
    def run_s(self) -> float:
        """Compute time of an unshared run, or of an average run while no unshared run was seen."""
        return self.solo_s or self.seconds


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
        max_queue_wait_s: float | None = None,
        queue_wait_runs: float = 4.0,
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
        self.max_queue_wait_s = max_queue_wait_s
        self.queue_wait_runs = queue_wait_runs
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
        self._inflight_items = 0
        # Per instance: loop time its run started and the items it holds (0 when idle).
        self._run_started = [0.0] * instances
        self._run_items = [0] * instances
        self.service = ServiceEstimate()
        self._closed = False
        # CoDel's distinction between a burst and a standing queue: the queue-wait target is enforced once
        # runs have kept starting with their oldest request over it for STANDING_QUEUE_S, and stays
        # enforced until no arrival has been over it for STANDING_QUEUE_S (hysteresis, so it does not
        # switch off whenever the model drains between two runs).
        self._over_target_since: float | None = None
        self._standing_queue = False
        self._last_over_target_at = 0.0

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def busy(self) -> bool:
        return self._inflight > 0 or bool(self._queue)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(i), name=f"batcher-{self._name}-{i}") for i in range(self._instances)
        ]

    def seed(self, runs: Iterable[tuple[int, float]]) -> None:
        """Start the estimate from warm-up runs at load, (items, compute seconds) each.

        Every run counts for throughput; only one-item runs stand for the unshared run time, since a
        warm-up at the largest batch is not what a lone client request costs.
        """
        for items, compute_s in runs:
            self.service.record(items, compute_s, unshared=items == 1)

    def queue_wait_limit_s(self) -> float:
        """The queue-wait target: `max_queue_wait_s`, or `queue_wait_runs` unshared runs' worth."""
        if self.max_queue_wait_s is not None:
            return self.max_queue_wait_s
        fill_s = 0.0 if self.dispatch_when_idle else self.max_delay_s
        return max(MIN_AUTO_QUEUE_WAIT_S, self.queue_wait_runs * self.service.run_s + fill_s)

    async def submit(self, inputs: Arrays, items: int, deadline: float) -> Arrays:
        """Queue a request of `items` rows; resolve with its rows of the outputs. `deadline` is loop time."""
        if self._closed:
            raise Unavailable(f"model {self._name} is shutting down", retry_after_s=1.0)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._admit(items, deadline - now, now)
        future: asyncio.Future[Arrays] = loop.create_future()
        self._queue.append(_Pending(inputs, items, future, now, _signature(inputs)))
        self._queued_items += items
        self._arrived.set()
        if self._queued_items >= self.max_batch_size:
            self._full.set()
        timer = loop.call_at(deadline, self._expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _admit(self, items: int, budget_s: float, now: float) -> None:
        """Raise Unavailable (503) when the request cannot be served in time; O(instances), no allocation."""
        queued = self._queued_items
        known = self.service.known
        if queued + items > self.max_queue_items and queued > 0:
            excess = queued + items - self.max_queue_items
            retry_s = excess / self._items_per_s(now) if known else self._cold_retry_after_s()
            self._shed(
                "queue_full",
                f"{queued} items queued (max_queue_items {self.max_queue_items})",
                retry_s,
            )
        ahead = queued + self._inflight_items
        if self._standing_queue and now - self._last_over_target_at >= STANDING_QUEUE_S:
            self._standing_queue = False
        # An idle model always admits: a cold model has nothing to go by, and a stale estimate (a model
        # that was slow and is fast again) is only corrected by runs, so refusing on it would persist.
        if ahead == 0 or not known:
            return
        rate = self._items_per_s(now)
        wait_s = ahead / rate
        finish_s = wait_s + items / rate
        limit_s = self.queue_wait_limit_s()
        if wait_s > limit_s:
            self._last_over_target_at = now
        if finish_s > budget_s:
            # Retry when the backlog has drained to what this deadline allows ahead.
            allowed_ahead = max(0.0, budget_s * rate - items)
            self._shed(
                "deadline",
                f"expected to finish in {finish_s:.3f} s, after its deadline of {budget_s:.3f} s "
                "(timeout_s, parameters.timeout or X-Request-Timeout-Ms)",
                (ahead - allowed_ahead) / rate,
            )
        if self._standing_queue and wait_s > limit_s:
            self._shed(
                "queue_wait",
                f"expected queue wait {wait_s * 1000:.1f} ms is over the limit of {limit_s * 1000:.1f} ms "
                "(batching.max_queue_wait_s)",
                wait_s - limit_s,
            )

    def _shed(self, reason: ShedReason, why: str, retry_s: float) -> None:
        self._observer.on_shed(reason)
        retry_s = max(_MIN_RETRY_AFTER_S, retry_s)
        raise Unavailable(
            f"model {self._name} is overloaded: {why}; retry after {retry_s:.3f} s or add replicas",
            retry_after_s=retry_s,
        )

    def _items_per_s(self, now: float) -> float:
        """Measured throughput of all instances, lowered at once while a run is overdue.

        A run that has taken k times its expected time is assumed to need (k - 1) times longer still, so
        the rate drops by k - 1: thread-scheduling jitter (up to 2x on a small run) changes nothing, and
        a model that became 10x slower is seen as such before its first slow run ends.
        """
        per_instance = self.service.items_per_s
        slowdown = 1.0
        for started, run_items in zip(self._run_started, self._run_items, strict=True):
            if run_items:
                elapsed_runs = (now - started) * per_instance / run_items
                slowdown = max(slowdown, elapsed_runs - 1.0)
        return per_instance * self._instances / slowdown

    def _note_queue_wait(self, oldest_wait_s: float, now: float) -> None:
        """Track whether the queue stands over its target (a burst drains within STANDING_QUEUE_S)."""
        if oldest_wait_s <= self.queue_wait_limit_s():
            self._over_target_since = None
            return
        self._last_over_target_at = now  # a run that starts late shows the queue still stands
        if self._over_target_since is None:
            self._over_target_since = now
        elif now - self._over_target_since >= STANDING_QUEUE_S:
            self._standing_queue = True

    def _cold_retry_after_s(self) -> float:
        # Nothing measured yet: one run per batch ahead, guessed at 10 ms each.
        return 0.01 * self._queued_items / max(1, self.max_batch_size * self._instances)

    def _expire(self, future: asyncio.Future[Arrays]) -> None:
        if not future.done():
            self._observer.on_shed("expired")
            future.set_exception(
                DeadlineExceeded(f"model {self._name}: request deadline passed before a result was ready")
            )

    async def _work(self, instance: int) -> None:
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
            await self._run(batch, loop, instance)

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

    async def _run(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop, instance: int) -> None:
        started = loop.time()
        queue_s = [started - pending.enqueued_at for pending in batch]
        self._note_queue_wait(queue_s[0], started)
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        total_items = sum(p.items for p in batch)
        self._inflight += 1
        self._inflight_items += total_items
        self._run_started[instance] = started
        self._run_items[instance] = total_items
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
            self._inflight_items -= total_items
            self._run_items[instance] = 0
        compute_s = loop.time() - started
        self.service.record(total_items, compute_s, unshared=len(batch) == 1)
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


def _fail_all(batch: list[_Pending], error: ModelfleetError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
