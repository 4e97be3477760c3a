"""A test double of the runtime `Model` protocol (runtime/base.py) with outputs a test can compute.

`SumModel` takes `x` FP32 [-1, 3] and answers `sum` FP32 [-1] (each row's sum) and `double` FP32 [-1, 3]
(2x). It refuses a request with a negative value in `validate_inputs`, as a real model refuses bad
text, so a bad request fails alone. It records the items of every run, and a test can hold runs at a
gate to make requests queue behind one another.
"""

from __future__ import annotations

import threading

import numpy as np

from modelfleet.errors import InvalidInput
from modelfleet.types import Arrays, Datatype, TensorSpec

WIDTH = 3
# A run held at the gate gives up after this long, so a test that forgets to open it still ends.
GATE_TIMEOUT_S = 10.0


class SumModel:
    """A real class implementing `Model`; nothing in it is a mock."""

    platform = "modelfleet_test"
    sha256 = "5" * 64
    file_size_bytes = 0

    def __init__(self, name: str = "sum", version: str = "1") -> None:
        self.name = name
        self.version = version
        self.inputs = [TensorSpec("x", Datatype.FP32, (-1, WIDTH))]
        self.outputs = [
            TensorSpec("sum", Datatype.FP32, (-1,)),
            TensorSpec("double", Datatype.FP32, (-1, WIDTH)),
        ]
        self.runs: list[int] = []  # items per run, in order (warm-up runs included)
        self.running = threading.Event()  # set when a run starts
        self.gate = threading.Event()  # runs wait here while it is clear
        self.gate.set()
        self.closed = False

    def predict(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self.runs.append(int(x.shape[0]))
        self.running.set()
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise RuntimeError("the test never opened the gate")
        return {"sum": x.sum(axis=1, dtype=np.float32), "double": x * np.float32(2)}

    def validate_inputs(self, inputs: Arrays) -> Arrays:
        if bool((inputs["x"] < 0).any()):
            raise InvalidInput("input 'x' must not be negative (the test model's rule)")
        return inputs

    def example_inputs(self, batch_size: int) -> Arrays:
        return {"x": np.zeros((batch_size, WIDTH), dtype=np.float32)}

    def close(self) -> None:
        self.closed = True
