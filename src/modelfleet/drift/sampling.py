"""Sampling served items into a bounded window (reservoir sampling), and the columnar window itself.

The server calls `Sampler.offer` after every successful inference. It costs one random draw per request;
only a sampled request pays for copying its rows (at most `max_items_per_request` of them, numpy slices),
so the hot path stays as fast with sampling on as off. The window is Algorithm R (Vitter 1985): after n
offered items each one is in the window with probability k/n, and memory is k rows however long it runs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfleet.config.drift import DriftConfig
from modelfleet.types import Arrays

Row = dict[str, np.ndarray[Any, Any]]
# (served at, input rows, output rows): one item as the reservoir holds it
Item = tuple[float, Row, Row]


_SHARED_RANDOM = random.Random()


@dataclass(frozen=True, slots=True)
class Window:
    """Items by column: each tensor name maps to an array whose first axis is the items."""

    inputs: Arrays
    outputs: Arrays
    at: np.ndarray[Any, Any]  # float64 Unix seconds, one per item

    def __len__(self) -> int:
        return int(self.at.shape[0])

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> Window:
        rows = list(items)
        if not rows:
            return cls({}, {}, np.zeros(0))
        _, first_in, first_out = rows[0]
        inputs = {name: np.stack([row[1][name] for row in rows]) for name in first_in}
        outputs = {name: np.stack([row[2][name] for row in rows]) for name in first_out}
        return cls(inputs, outputs, np.array([row[0] for row in rows], dtype=np.float64))

    @classmethod
    def concat(cls, windows: Iterable[Window]) -> Window:
        parts = [window for window in windows if len(window)]
        if not parts:
            return cls({}, {}, np.zeros(0))
        if len(parts) == 1:
            return parts[0]
        # Only tensors every part has: replicas of two versions may differ in their outputs.
        inputs = set.intersection(*(set(p.inputs) for p in parts))
        outputs = set.intersection(*(set(p.outputs) for p in parts))
        return cls(
            {name: np.concatenate([p.inputs[name] for p in parts]) for name in sorted(inputs)},
            {name: np.concatenate([p.outputs[name] for p in parts]) for name in sorted(outputs)},
            np.concatenate([p.at for p in parts]),
        )

    def subsample(self, items: int, seed: int = 0) -> Window:
        """At most `items` of these, chosen without replacement at a fixed seed (order kept)."""
        if len(self) <= items:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=items, replace=False))
        return Window(
            {k: v[keep] for k, v in self.inputs.items()},
            {k: v[keep] for k, v in self.outputs.items()},
            self.at[keep],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.tolist(),
            "inputs": {name: jsonable(array) for name, array in self.inputs.items()},
            "outputs": {name: jsonable(array) for name, array in self.outputs.items()},
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Window:
        """The inverse of `to_json`; text comes back as object arrays of str."""
        at = np.asarray(document.get("at", []), dtype=np.float64)
        return cls(
            {name: _array(value) for name, value in dict(document.get("inputs", {})).items()},
            {name: _array(value) for name, value in dict(document.get("outputs", {})).items()},
            at,
        )


def jsonable(array: np.ndarray[Any, Any]) -> Any:
    """JSON-native values of an array: numbers as lists, BYTES elements as text (invalid UTF-8 replaced)."""
    if array.dtype.kind not in "OSU":
        return array.tolist()
    return _decoded(array.tolist())


def _decoded(value: Any) -> Any:
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _array(value: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(value)
    if array.dtype.kind in "USO":
        return np.asarray(value, dtype=object)
    return array


class Sampler:
    """One model version's sampling in one server process: the window, the served reference, the capture.

    `on_sampled` (the capture writer, when there is one) gets every sampled item; it must only queue it.
    """

    def __init__(
        self,
        config: DriftConfig,
        seed: int | None = None,
        on_sampled: Callable[[Item], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.rate = config.sample_rate if config.sampling else 0.0
        self.capacity = config.window_items
        # Unseeded samplers share one generator: a Random's state is 2.5 KB, 7.5 MB for 3,000 names.
        self._random = random.Random(seed) if seed is not None else _SHARED_RANDOM
        self._items: list[Item] = []
        self._reference: list[Item] = []
        self._reference_target = config.reference.served_items if config.reference.source == "served" else 0
        self._on_sampled = on_sampled
        self._clock = clock
        self.requests_sampled = 0
        self.items_seen = 0  # items offered to the window (sampled requests' rows), the n of Algorithm R

    def offer(self, inputs: Arrays, outputs: Arrays, items: int) -> None:
        """Called after every successful request with its inputs and outputs (first axis: its items)."""
        if self.draw():
            self.add(inputs, outputs, items)

    def draw(self) -> bool:
        """Whether to sample this request: the one random draw every request costs."""
        return self._random.random() < self.rate

    def add(self, inputs: Arrays, outputs: Arrays, items: int) -> None:
        """Put a sampled request's first items into the window (and the served reference, and the capture)."""
        self.requests_sampled += 1
        at = self._clock()
        # Bounded by max_items_per_request (default 8): one sampled request copies a few rows, nothing more.
        for index in range(min(items, self.config.max_items_per_request)):
            item: Item = (
                at,
                # dtype kept: a text element stays an object array (np.array(b"...") would make it "S").
                {name: np.array(array[index], dtype=array.dtype) for name, array in inputs.items()},
                {name: np.array(array[index], dtype=array.dtype) for name, array in outputs.items()},
            )
            self._add(item)
            if len(self._reference) < self._reference_target:
                self._reference.append(item)
            if self._on_sampled is not None:
                self._on_sampled(item)

    def _add(self, item: Item) -> None:
        self.items_seen += 1
        if len(self._items) < self.capacity:
            self._items.append(item)
            return
        slot = self._random.randrange(self.items_seen)
        if slot < self.capacity:
            self._items[slot] = item

    def window(self) -> Window:
        return Window.from_items(self._items)

    def served_reference(self) -> Window | None:
        """The first `served_items` sampled items once there are that many (source `served`), else None."""
        if self._reference_target == 0 or len(self._reference) < self._reference_target:
            return None
        return Window.from_items(self._reference)

    @property
    def served_reference_items(self) -> int:
        return len(self._reference)
