"""Dynamic batching and admission for one model: a pure asyncio unit with no HTTP and no model knowledge.

A batch closes when it holds `max_batch_size` items or `max_delay_s` after its first request arrived.
With `dispatch_when_idle` (the default) an idle model starts at once instead of waiting: at low load no
request pays the delay, and under load batches still form from the requests that queue during a run.
The model runs in a worker thread so the event loop keeps accepting; while a run is in flight the
queue keeps filling, so the next batch is ready the moment the run ends.

Admission (docs/serve.md, "Overload and admission"): the queue is bounded by time, not only by items.
Each run's items and compute time feed a cost model (a run of k items costs fixed + per_item × k, fitted
online); a new request's expected finish is the time until its own run starts (the rest of the runs in
flight, then the full batches queued ahead of it) plus the cost of that run with it included. It is
refused at once (503 with a Retry-After computed from the backlog) when it would not finish by its
deadline, or not within the queue-wait target. `max_queue_items` stays the hard memory bound. A request
whose deadline passes anyway is failed by a timer at its deadline (504), queued or running, never later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from modelfleet.errors import DeadlineExceeded, ModelfleetError, Unavailable
from modelfleet.observe.timing import InferTiming
from modelfleet.server.estimates import LoopLag, ServiceEstimate, loop_lag
from modelfleet.server.run_threads import RunThreads
from modelfleet.types import Arrays

ShedReason = Literal["queue_full", "queue_wait", "deadline", "expired"]
SHED_REASONS: tuple[ShedReason, ...] = ("queue_full", "queue_wait", "deadline", "expired")

_MIN_RETRY_AFTER_S = 0.001
# The automatic queue-wait target never goes below this: under a few milliseconds, event-loop and
# thread hand-off jitter alone would make a lightly loaded tiny model refuse.
MIN_AUTO_QUEUE_WAIT_S = 0.010
# A model that has refused nothing for this long past the retry-after of its last refusal is not
# overloaded, and a burst may take it past its target by up to BURST_BATCH_SHARE of a max batch's compute
# time; the first refusal ends that, so a sustained overload is held to the target itself. Half a batch:
# 16 concurrent clients of a model with max_batch_size 32 are served at once, while the backlog let in at
# the start of an overload adds at most half a full run (MiniLM fp32 here: 33 ms) to the latency of the
# few requests in it. 1 s, not CoDel's 100 ms: behind the router's adaptive window a replica refuses only
# about once per window of requests under a sustained overload; at 100 ms it read itself as idle between
# those refusals and let bursts in (admitted p99 swung between 40 and 240 ms from one second to the next).
STANDING_QUEUE_S = 1.0
# Linux's default timer tick (HZ=250): a thread that waits one tick for a core is not a slow model.
SCHEDULER_QUANTUM_S = 0.004
BURST_BATCH_SHARE = 0.5
# An impatient client (Batcher.submit) is queued while everything outstanding fits this many batches: the
# run in flight and the next one. Without a bound, an open-loop generator that reuses a refused
# connection at once reads as impatient too, and its admitted p90 rose to its 2 s deadline.
IMPATIENT_BATCHES = 2


class BatchObserver(Protocol):
    """Receives timings and refusals; the server plugs Prometheus metrics in here."""

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None: ...

    def on_queue_depth(self, items: int) -> None: ...

    def on_shed(self, reason: ShedReason) -> None: ...


class SharedRuns(Protocol):
    """The run queue of a session shared by several names (server/lanes.py): `submit` resolves with the
    batch's outputs and the seconds it waited behind other names' runs; `wait_s` estimates that wait now."""

    def submit(
        self, inputs: Arrays, items: int, signature: tuple[Any, ...], max_items: int
    ) -> asyncio.Future[tuple[Arrays, float]]: ...

    def wait_s(self, now: float) -> float: ...


class _NullObserver:
    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        pass

    def on_queue_depth(self, items: int) -> None:
        pass

    def on_shed(self, reason: ShedReason) -> None:
        pass


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    items: int
    future: asyncio.Future[Arrays]
    enqueued_at: float
    # Requests whose non-batch dimensions differ cannot share a run; this tells them apart.
    signature: tuple[Any, ...] = field(default=())
    timing: InferTiming | None = None  # only while tracing is on (observe/tracing.py)
    taken: bool = False  # off the queue: into a batch, or dropped there as done


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
        self._threads = RunThreads(instances, f"run-{name}")
        self._workers: list[asyncio.Task[None]] = []
        self._inflight = 0
        self._inflight_items = 0
        # Per instance: loop time its run started, the compute time expected then, and its items (0: idle).
        self._run_started = [0.0] * instances
        self._run_expected_s = [0.0] * instances
        self._run_items = [0] * instances
        self.service = ServiceEstimate()
        self._closed = False
        # Loop time until which the model counts as overloaded: STANDING_QUEUE_S past the retry-after of
        # its last refusal by queue wait or size. Counting from the refusal itself was not enough: the
        # router holds a refused model for that retry-after, so the model saw no traffic, read itself as
        # not overloaded and let the returning burst in whole (admitted p99 ~350 ms at 3x capacity).
        self._overloaded_until = -math.inf
        self._burst_items = max(1, round(max_batch_size * BURST_BATCH_SHARE))
        self._lag: LoopLag | None = None
        # Set by the first request that carries an InferTiming (tracing is on for the whole process):
        # until then a run takes no timestamps beyond its own.
        self._traced = False
        self._lane: SharedRuns | None = None
        # Set by the warm-up (server.warmup.warm): its runs are one request each, but only a one-item run
        # after the first (cold) one is what a lone client request costs.
        self.warming = False

    def share_runs(self, lane: SharedRuns) -> None:
        """Run batches on `lane`, the run queue of a session other names share, not in this batcher's
        own thread: their runs then never overlap on the session, and merge when they can."""
        self._lane = lane

    @property
    def busy(self) -> bool:
        return self._inflight > 0 or bool(self._queue)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._lag = loop_lag(loop)
        self._lag.acquire()
        self._workers = [
            loop.create_task(self._work(i), name=f"batcher-{self._name}-{i}") for i in range(self._instances)
        ]

    def seed(self, runs: Iterable[tuple[int, float]]) -> None:
        """Start the estimate from warm-up runs at load, (items, compute seconds) each.

        Every run counts for throughput; only one-item runs after the first stand for the unshared run
        time: a warm-up at the largest batch is not what a lone client request costs, and nor is a
        session's first, cold run (see warmup.warmup_batch_sizes).
        """
        for index, (items, compute_s) in enumerate(runs):
            self.service.record(items, compute_s, unshared=items == 1 and index > 0)

    def queue_wait_limit_s(self) -> float:
        """The queue-wait target: `max_queue_wait_s`, or `queue_wait_runs` unshared runs' worth."""
        if self.max_queue_wait_s is not None:
            return self.max_queue_wait_s
        fill_s = 0.0 if self.dispatch_when_idle else self.max_delay_s
        return max(MIN_AUTO_QUEUE_WAIT_S, self.queue_wait_runs * self.service.run_s + fill_s)

    async def submit(
        self,
        inputs: Arrays,
        items: int,
        deadline: float,
        timing: InferTiming | None = None,
        impatient: bool = False,
    ) -> Arrays:
        """Queue a request of `items` rows; resolve with its rows of the outputs. `deadline` is loop time;
        `timing` (tracing on) receives its batch's times and size.

        `impatient`: its client was refused and resent before the retry-after it was given. While
        everything outstanding fits IMPATIENT_BATCHES batches, the queue-wait target does not refuse it
        again (its deadline and `max_queue_items` still do). A closed-loop client resends a 503 at once,
        so refusing it only makes refusals: 64 such clients of a `max_batch_size` 64 MiniLM got ~96 %
        503s at a third of the model's throughput for as long as the load lasted (the refusals took the
        cores the runs needed, which slowed the runs, which raised the estimates). Each such client holds
        one request at a time, so what it queues is bounded by its connections; a client that waits as
        asked (the router, `modelfleet bench`) is never impatient.
        """
        if self._closed:
            raise Unavailable(f"model {self._name} is shutting down", retry_after_s=1.0)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._admit(items, deadline - now, now, impatient)
        future: asyncio.Future[Arrays] = loop.create_future()
        if timing is not None:
            self._traced = True
        pending = _Pending(inputs, items, future, now, _signature(inputs), timing)
        self._queue.append(pending)
        self._queued_items += items
        self._arrived.set()
        if self._queued_items >= self.max_batch_size:
            self._full.set()
        timer = loop.call_at(deadline, self._expire, future)
        try:
            return await future
        finally:
            timer.cancel()
            if not pending.taken:  # expired, or cancelled (its client hung up) while queued
                # Uncounted now, not when the next batch drops it: its client is gone, and counted it made
                # the clients that took its place look like an excess (a reconnecting load test: 503s).
                self._queued_items -= pending.items
                pending.items = 0

    def _admit(self, items: int, budget_s: float, now: float, impatient: bool = False) -> None:
        """Raise Unavailable (503) when the request cannot be served in time; O(instances), no allocation."""
        queued = self._queued_items
        known = self.service.known
        if queued + items > self.max_queue_items and queued > 0:
            excess = queued + items - self.max_queue_items
            retry_s = excess / self._items_per_s(now) if known else self._cold_retry_after_s()
            self._overloaded_until = now + retry_s + STANDING_QUEUE_S
            self._shed(
                "queue_full",
                f"{queued} items queued (max_queue_items {self.max_queue_items})",
                retry_s,
            )
        # An idle model always admits: a cold model has nothing to go by, and a stale estimate (a model
        # that was slow and is fast again) is only corrected by runs, so refusing on it would persist.
        lane_s = self._lane.wait_s(now) if self._lane is not None else 0.0
        if (queued == 0 and self._inflight == 0 and lane_s == 0.0) or not known:
            return
        finish_s = self._expected_finish_s(items, now, lane_s)
        # Waiting for the loop, before admission and again for the answer, counts against the deadline.
        # Not against the queue-wait target: that bounds the model's own queue, and with the lag in it a
        # busy machine made a fast model (iris, 0.1 ms runs) refuse two closed-loop clients.
        lag_s = 2 * self._lag.lag_s if self._lag is not None else 0.0
        if finish_s + lag_s > budget_s:
            self._shed(
                "deadline",
                f"expected to finish in {finish_s + lag_s:.3f} s, after its deadline of {budget_s:.3f} s "
                "(timeout_s, parameters.timeout or X-Request-Timeout-Ms)",
                finish_s + lag_s - budget_s,  # when the backlog ahead has drained by the excess
            )
        if impatient and self._inflight_items + queued + items <= IMPATIENT_BATCHES * self.max_batch_size:
            return
        target_s = self.queue_wait_limit_s()
        limit_s = target_s
        if now >= self._overloaded_until:  # not overloaded: a burst may pass the target
            if self._inflight_items + queued + items <= self.max_batch_size and lane_s == 0.0:
                # Everything outstanding, the run in flight included, fits one batch: it runs in the next
                # one and no queue stands, so refusing it shortens no wait by more than its own items'
                # share of one run. Without this, 32 closed-loop clients of a question-answering model
                # (one ~25 ms run per window) got 25,629 503s in 8 s, each client resending at once: a
                # refusal storm that bounded concurrency never needs. The run in flight counts: when only
                # the queue did, the first second of an open-loop overload let a full batch queue behind
                # a full batch in flight, and its admitted p99 was 160-215 ms against 17-25 ms after.
                # It applies while a run in flight is overdue too. Not past half a batch while a run was
                # 1.5x overdue cut an open-loop overload's onset (its first 100 ms admitted 58 requests
                # at p50 67 ms, not 68 at p50 137), but closed-loop clients then met a refusal whenever
                # one run was slow: 64 of them, with max_batch_size 64, got 31,042 503s in 15 s.
                return
            limit_s += self.service.run_cost_s(self._burst_items)
        if finish_s > limit_s:
            self._overloaded_until = now + max(_MIN_RETRY_AFTER_S, finish_s - target_s) + STANDING_QUEUE_S
            self._shed(
                "queue_wait",
                f"expected queue wait {finish_s * 1000:.1f} ms is over the limit of {target_s * 1000:.1f} ms "
                "(batching.max_queue_wait_s)",
                finish_s - target_s,
            )

    def _expected_finish_s(self, items: int, now: float, lane_s: float = 0.0) -> float:
        """Seconds until a new request of `items` would have its result: batch-aware, O(instances).

        The queue runs as full batches of `max_batch_size` and then the batch this request joins; they
        start as the `instances` free up (the runs in flight first), each costing what the cost model says
        for its size. A run in flight that is overdue by x is assumed to need x more, and a run that has
        taken k times its expected time slows every estimate by k - 1 (thread-scheduling jitter, up to 2x
        on a small run, changes nothing; a model that became 10x slower sheds before its first slow run ends).
        On a shared lane, the lane's wait (`lane_s`, every name's runs ahead, its own included) replaces
        this batcher's runs in flight.
        """
        service = self.service
        if self._lane is not None:
            remaining_s, busy, slowdown = lane_s * self._instances, self._instances, 1.0
        else:
            remaining_s, busy, slowdown = self._in_flight(now)
        full_runs, partial = divmod(self._queued_items, self.max_batch_size)
        own = partial + items
        if partial and own > self.max_batch_size:  # does not fit the partial batch: it starts the next
            full_runs += 1
            own = items
        if full_runs < self._instances - busy:
            wait_s = 0.0
        else:
            queued_s = full_runs * service.run_cost_s(self.max_batch_size) * slowdown
            wait_s = (remaining_s + queued_s) / self._instances
        return wait_s + service.run_cost_s(own) * slowdown

    def _in_flight(self, now: float) -> tuple[float, int, float]:
        """(expected seconds left in the runs in flight, runs in flight, slowdown factor ≥ 1)."""
        remaining_s = 0.0
        busy = 0
        slowdown = 1.0
        # A run's expected time is floored at a scheduler quantum when it is read for lateness: a model
        # of 0.1-0.2 ms runs (iris) read as 50x slower, and 10 ms late, after one thread-scheduling stall
        # on a busy machine, and refused 46-155 of ~95,000 requests from 64 closed-loop clients in 10 s.
        # A stall says nothing about the model's speed; an overrun of several quanta does.
        for started, expected_s, run_items in zip(
            self._run_started, self._run_expected_s, self._run_items, strict=True
        ):
            if run_items:
                busy += 1
                elapsed_s = now - started
                overdue_s = elapsed_s - expected_s
                if overdue_s <= 0:
                    remaining_s -= overdue_s
                    continue
                # Overdue: assume it needs as long again as it has overrun, up to one more expected run.
                floor_s = max(expected_s, SCHEDULER_QUANTUM_S)
                remaining_s += min(overdue_s, floor_s)
                slowdown = max(slowdown, elapsed_s / floor_s - 1.0)
        return remaining_s, busy, slowdown

    def _shed(self, reason: ShedReason, why: str, retry_s: float) -> None:
        self._observer.on_shed(reason)
        retry_s = max(_MIN_RETRY_AFTER_S, retry_s)
        raise Unavailable(
            f"model {self._name} is overloaded: {why}; retry after {retry_s:.3f} s or add replicas",
            retry_after_s=retry_s,
        )

    def _items_per_s(self, now: float) -> float:
        """Measured throughput of all instances, lowered at once while a run is overdue."""
        _, _, slowdown = self._in_flight(now)
        return self.service.items_per_s * self._instances / slowdown

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
                pending.taken = True
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
            pending.taken = True
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
        traced_at = time.monotonic() if self._traced else 0.0
        queue_s = [started - pending.enqueued_at for pending in batch]
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
        total_items = sum(p.items for p in batch)
        self._inflight += 1
        self._inflight_items += total_items
        self._run_started[instance] = started
        self._run_expected_s[instance] = self.service.run_cost_s(total_items) if self.service.known else 1.0
        self._run_items[instance] = total_items
        run_started = time.monotonic() if self._traced else 0.0
        try:
            if self._lane is None:
                outputs = await self._threads.run(self._run_batch, merged)
            else:  # its wait behind other names' runs is its requests' queue time, not compute
                outputs, waited_s = await self._lane.submit(
                    merged, total_items, batch[0].signature, self.max_batch_size
                )
                started += waited_s
                queue_s = [wait_s + waited_s for wait_s in queue_s]
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
        run_finished = time.monotonic() if self._traced else 0.0
        unshared = len(batch) == 1 and (not self.warming or (total_items == 1 and self.service.known))
        self.service.record(total_items, compute_s, unshared=unshared)
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
        if self._traced:
            _record_timings(batch, traced_at, run_started, run_finished, total_items)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new work and wait for queued and running requests to finish."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._closed = True
        if self._lag is not None:
            self._lag.release()
            self._lag = None
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
        self._threads.shutdown(wait=True)


def _record_timings(
    batch: list[_Pending], started: float, run_started: float, run_finished: float, items: int
) -> None:
    done = time.monotonic()
    for pending in batch:
        timing = pending.timing
        if timing is not None:
            timing.batch_started, timing.run_started, timing.run_finished = started, run_started, run_finished
            timing.batch_done, timing.batch_items, timing.batch_requests = done, items, len(batch)


def _fail_all(batch: list[_Pending], error: ModelfleetError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
