"""One run queue for a session shared by several names: their runs never overlap, and merge when they can.

Measured in process (MiniLM fp32, 2 threads, 2 busy cores, 100 single-item requests/s for 6 s spread
over names on one session): 1 name served 102/s, p99 60 ms; 150 names, each batcher running in its own
thread, 80/s, p99 1.6 s, their runs overlapping on the one session; the same 150 names through one shared
thread, 103/s but p99 535 ms, one run per request. Merging the names' pending runs into one run (this
module) is what brings many thin names back to one name's figure. Each name keeps its own batcher (its
batching settings, admission and metrics); the lane only decides when and with whom its batch runs.

A merged run that fails, or returns outputs that do not split by items, is rerun job by job, so one
name's bad request fails that name's requests only.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.server.estimates import ServiceEstimate
from modelfleet.server.run_threads import RunThreads
from modelfleet.types import Arrays


@dataclass(slots=True)
class _Job:
    inputs: Arrays
    items: int
    signature: tuple[Any, ...]
    max_items: int  # the submitting batcher's max_batch_size: no run it joins grows past it
    submitted_at: float
    future: asyncio.Future[tuple[Arrays, float]]


class RunLane:
    """The shared session's runs: at most `workers` at a time, each merging the compatible jobs queued.

    `submit` resolves with the job's rows of the outputs and the seconds it waited in the lane behind
    other runs (queue time for its requests, not compute). `wait_s` is the lane's own estimate of that
    wait for a job submitted now, from the merged runs' measured cost; the batchers add it to admission.
    """

    def __init__(self, run_batch: Callable[[Arrays], Arrays], workers: int, name: str) -> None:
        self._run_batch = run_batch
        self._workers = workers
        self._threads = RunThreads(workers, f"lane-{name}")
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_items = 0
        self._max_items = 1
        self._running: dict[asyncio.Task[None], float] = {}  # run → loop time it is expected to end
        self.service = ServiceEstimate()

    def submit(
        self, inputs: Arrays, items: int, signature: tuple[Any, ...], max_items: int
    ) -> asyncio.Future[tuple[Arrays, float]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Arrays, float]] = loop.create_future()
        self._queue.append(_Job(inputs, items, signature, max_items, loop.time(), future))
        self._queued_items += items
        self._max_items = max(self._max_items, max_items)
        self._dispatch(loop)
        return future

    def wait_s(self, now: float) -> float:
        """Expected seconds until a job submitted now starts: the runs in flight, then the queued jobs
        in runs as large as the names allow; 0 while a worker is free and nothing waits. O(workers)."""
        if len(self._running) < self._workers and not self._queue:
            return 0.0
        left_s = sum(max(0.0, end - now) for end in self._running.values())
        if self._queued_items and self.service.known:
            runs = math.ceil(self._queued_items / self._max_items)
            left_s += runs * self.service.fixed_s + self._queued_items * self.service.per_item_s
        return left_s / self._workers

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while len(self._running) < self._workers and self._queue:
            jobs, items = self._take()
            if not jobs:
                continue
            expected_s = self.service.run_cost_s(items) if self.service.known else 0.0
            task = loop.create_task(self._run(jobs, items, loop))
            self._running[task] = loop.time() + expected_s
            task.add_done_callback(self._finished)

    def _take(self) -> tuple[list[_Job], int]:
        """The first live job and every later queued job of its signature that fits; O(queue)."""
        jobs: list[_Job] = []
        kept: list[_Job] = []
        items = 0
        limit = 0
        while self._queue:
            job = self._queue.popleft()
            self._queued_items -= job.items
            if job.future.done():  # its batcher was closed while it waited
                continue
            if not jobs:
                jobs, items, limit = [job], job.items, job.max_items
            elif job.signature == jobs[0].signature and items + job.items <= min(limit, job.max_items):
                jobs.append(job)
                items += job.items
                limit = min(limit, job.max_items)
            else:
                kept.append(job)
        self._queue.extend(kept)
        self._queued_items += sum(job.items for job in kept)
        return jobs, items

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        if not task.cancelled():
            task.exception()  # _run handles its own errors; this only marks an unexpected one retrieved
        self._dispatch(asyncio.get_running_loop())

    async def _run(self, jobs: list[_Job], items: int, loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        if len(jobs) == 1:
            await self._run_alone(jobs[0], started, loop)
            return
        merged = {name: np.concatenate([job.inputs[name] for job in jobs]) for name in jobs[0].inputs}
        try:
            outputs = await self._threads.run(self._run_batch, merged)
        except Exception:
            outputs = None
        if outputs is None or any(array.shape[:1] != (items,) for array in outputs.values()):
            for job in jobs:  # find whose request it was: each job alone, its own outcome
                await self._run_alone(job, started, loop)
            return
        self.service.record(items, loop.time() - started, unshared=False)
        offset = 0
        for job in jobs:
            end = offset + job.items
            if not job.future.done():
                job.future.set_result(
                    ({name: array[offset:end] for name, array in outputs.items()}, started - job.submitted_at)
                )
            offset = end

    async def _run_alone(self, job: _Job, started: float, loop: asyncio.AbstractEventLoop) -> None:
        run_started = loop.time()
        try:
            outputs = await self._threads.run(self._run_batch, job.inputs)
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        self.service.record(job.items, loop.time() - run_started, unshared=False)
        if not job.future.done():
            job.future.set_result((outputs, started - job.submitted_at))

    def close(self) -> None:
        """Fail what still waits (its batchers are closed) and stop the thread once its run is done."""
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.cancel()
        self._queued_items = 0
        self._threads.shutdown(wait=False)


__all__ = ["RunLane"]
