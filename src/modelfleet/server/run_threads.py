"""The threads model runs execute on: a fixed set reading one queue, answering on the event loop.

Own code rather than `loop.run_in_executor` on a ThreadPoolExecutor, which wraps each call in a
concurrent Future chained to an asyncio Future (two futures, done-callbacks on both sides and a
cancellation check). Measured on this 2-core VM with uvloop, a round trip of a no-op call took 273-340 µs
through run_in_executor and 190-215 µs through a queue.SimpleQueue read by the thread and one
`call_soon_threadsafe` back: the hand-off is on the path of every request of an idle model (a
single-request MiniLM run is ~6 ms, an iris run ~0.05 ms), and most of what is left is the two wake-ups
themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None  # a queue item that ends one thread


class RunThreads:
    """Up to `count` daemon threads named `{name}_{i}`; `run(fn, arg)` awaits `fn(arg)` on one of them."""

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._count = count
        self._name = name
        # Threads start on demand, as a ThreadPoolExecutor's do: a server of 3,000 lazily loaded models
        # holds a batcher per name, and most never run. A new thread starts when the runs queued outnumber
        # the threads waiting for one (under `_lock`, uncontended but for the moment a thread takes a run).
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0
        self._queued = 0
        self._closed = False

    def run(self, fn: Callable[[Any], T], arg: Any) -> asyncio.Future[T]:
        """A future of the running loop that resolves with `fn(arg)` (or its exception)."""
        if self._closed:
            raise RuntimeError("run threads are shut down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and len(self._threads) < self._count
            if start:
                self._idle += 1  # counted now, so the next run does not start another for this one
        if start:
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._queue.put((fn, arg, future))
        return future

    def _serve(self) -> None:
        counted = True  # its start counted it idle already
        while True:
            if not counted:
                with self._lock:
                    self._idle += 1
            counted = False
            item = self._queue.get()
            if item is _STOP:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            fn, arg, future = item
            try:
                result = fn(arg)
            except BaseException as exc:  # handed to the awaiting coroutine, as an executor would
                _answer(future, _set_exception, exc)
            else:
                _answer(future, _set_result, result)

    def shutdown(self, wait: bool = True) -> None:
        """Let every thread finish the run it holds, then end; with `wait`, join them."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()


def _answer(
    future: asyncio.Future[Any], setter: Callable[[asyncio.Future[Any], Any], None], value: Any
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
        future.get_loop().call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # cancelled meanwhile (the request's task was)
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
