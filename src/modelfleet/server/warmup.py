"""Warm a model through its own batcher before it reports ready, so the first client does not pay.

Measured (iris, 30 models in one server, 2 cores, server-side compute time of each model's first
request): with the runs made in a helper thread before the batcher existed, 0.5-2.3 ms over four trials,
no better than no warm-up at all, against 0.03-0.3 ms for later requests; the cost sits in the batcher's
own run thread and the first run ONNX Runtime makes from it. Submitted through the batcher itself the
runs take that cost at load time: 0.13 ms for the first request. MiniLM int8: 11.3 ms before, 9.3 ms
after, steady 8.3-9.7 ms. A first pass over 300 iris models at 200 requests/s had p50 4.8-8.4 ms before
and 2.6-2.7 ms after (the second, warm pass: 2.5-2.8 ms).

Text models run the build's fixed verification sentences (question answering: its question/context pairs) (their lengths vary, so several sequence
widths get allocated); other models run inputs generated from their tensor specs. Runs alternate
between `max_batch_size` and batch 1, the two shapes ONNX Runtime sees most.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfleet.config.serve import ModelConfig
from modelfleet.runtime.base import Model
from modelfleet.server.batching import Batcher, BatchObserver, ShedReason
from modelfleet.types import Arrays, Datatype

# A warm-up run is not a client request: no client deadline applies, but a run that hangs must still
# fail the load instead of keeping the model LOADING forever.
WARMUP_DEADLINE_S = 600.0


@dataclass(slots=True)
class WarmupObserver:
    """The batcher's observer: while `warming`, runs are recorded here instead of the model's metrics."""

    forward: BatchObserver
    warming: bool = True
    # (items, compute seconds) of every warm-up run, in order: what a throughput estimate can start from.
    runs: list[tuple[int, float]] = field(default_factory=list)

    def on_batch(self, items: int, requests: int, compute_s: float, queue_s: list[float]) -> None:
        if self.warming:
            self.runs.append((items, compute_s))
        else:
            self.forward.on_batch(items, requests, compute_s, queue_s)

    def on_queue_depth(self, items: int) -> None:
        if not self.warming:
            self.forward.on_queue_depth(items)

    def on_shed(self, reason: ShedReason) -> None:
        self.forward.on_shed(reason)


def warmup_batch_sizes(config: ModelConfig) -> list[int]:
    """The largest batch, then batch 1, alternating, `warmup_runs` runs in all.

    The largest first: a session's first run is cold (ONNX Runtime allocates, its threads start), and a
    cold one-item run seeded the batcher's unshared run time, the unit of its queue-wait target. MiniLM
    in a fleet just started on 2 cores read 38 ms for a run of 4.5 ms, and admitted queues of 150 ms until
    a lone request came, which a sustained overload never sends."""
    sizes = [config.batching.max_batch_size, 1]
    return [sizes[run % 2] for run in range(config.warmup_runs)]


def warmup_inputs(model: Model, batch_size: int) -> Arrays:
    """Realistic inputs: the verification sentences for text, generated values from the specs otherwise."""
    inputs = model.example_inputs(batch_size)
    names = [spec.name for spec in model.inputs]
    if names == ["question", "context"]:  # question answering: real pairs, long contexts included
        from modelfleet.build.samples import VERIFICATION_QA

        pairs = list(itertools.islice(itertools.cycle(VERIFICATION_QA), batch_size))
        for position, name in enumerate(names):
            column: np.ndarray[Any, Any] = np.empty(batch_size, dtype=object)
            column[:] = [pair[position].encode() for pair in pairs]
            inputs[name] = column
        return model.validate_inputs(inputs)
    for spec in model.inputs:
        if spec.datatype is Datatype.BYTES and len(spec.shape) == 1:
            from modelfleet.build.samples import VERIFICATION_SENTENCES

            sentences = itertools.islice(itertools.cycle(VERIFICATION_SENTENCES), batch_size)
            texts: np.ndarray[Any, Any] = np.empty(batch_size, dtype=object)
            texts[:] = [sentence.encode() for sentence in sentences]
            inputs[spec.name] = texts
    return inputs


async def warm(batcher: Batcher, model: Model, config: ModelConfig, observer: WarmupObserver) -> None:
    """Run the warm-up through `batcher` (started), then hand its observations to the model's metrics."""
    loop = asyncio.get_running_loop()
    batcher.warming = True
    try:
        for batch_size in warmup_batch_sizes(config):
            inputs = await asyncio.to_thread(warmup_inputs, model, batch_size)
            await batcher.submit(inputs, batch_size, loop.time() + WARMUP_DEADLINE_S)
    finally:
        batcher.warming = False
        observer.warming = False
