"""The Model protocol every backend implements."""

from __future__ import annotations

from typing import Protocol

from modelfleet.types import Arrays, TensorSpec


class Model(Protocol):
    """A loaded model. `predict` takes and returns V2-named arrays batched along dimension 0.

    `predict` is called from a worker thread, never from the event loop; implementations release the
    GIL in their heavy work (ONNX Runtime and `tokenizers` both do).
    """

    name: str
    version: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str
    file_size_bytes: int

    def predict(self, inputs: Arrays) -> Arrays: ...

    def validate_inputs(self, inputs: Arrays) -> Arrays:
        """Check one request's inputs (datatypes and shapes already match the specs) and return them
        ready for `predict`; raise InvalidInput for a bad one. Called per request on the event loop
        before the request joins a batch, so it must be cheap: O(bytes), no model run.
        """
        ...

    def example_inputs(self, batch_size: int) -> Arrays:
        """Valid inputs of the given batch size, for warm-up runs."""
        ...

    def close(self) -> None: ...
