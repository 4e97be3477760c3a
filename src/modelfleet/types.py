"""The smallest shared vocabulary: datatypes, tensor specs, named arrays, model references and progress callbacks.

Everything here is pure and dependency-light (numpy only) so every layer can import it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class Datatype(enum.StrEnum):
    """Tensor datatypes of the Open Inference Protocol (V2)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element in the binary wire format; 0 for variable-length BYTES."""
        return 0 if self is Datatype.BYTES else _TO_NUMPY[self].itemsize

    @classmethod
    def from_numpy(cls, dtype: np.dtype[Any]) -> Datatype:
        if dtype.kind in ("O", "S", "U"):
            return cls.BYTES
        try:
            return _FROM_NUMPY[np.dtype(dtype)]
        except KeyError:
            raise ValueError(f"numpy dtype {dtype} has no V2 datatype") from None


_TO_NUMPY: dict[Datatype, np.dtype[Any]] = {
    Datatype.BOOL: np.dtype(np.bool_),
    Datatype.UINT8: np.dtype(np.uint8),
    Datatype.UINT16: np.dtype(np.uint16),
    Datatype.UINT32: np.dtype(np.uint32),
    Datatype.UINT64: np.dtype(np.uint64),
    Datatype.INT8: np.dtype(np.int8),
    Datatype.INT16: np.dtype(np.int16),
    Datatype.INT32: np.dtype(np.int32),
    Datatype.INT64: np.dtype(np.int64),
    Datatype.FP16: np.dtype(np.float16),
    Datatype.FP32: np.dtype(np.float32),
    Datatype.FP64: np.dtype(np.float64),
    Datatype.BYTES: np.dtype(object),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items() if k is not Datatype.BYTES}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor as a client sees it. -1 in ``shape`` marks a variable dimension."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # A request may leave an optional input out (e.g. a classifier's `text_pair`).
    optional: bool = False

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape, shape, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype.value, "shape": list(self.shape)}


# A model's inputs or outputs by V2 tensor name, batched along dimension 0.
Arrays = dict[str, np.ndarray[Any, Any]]

_MODEL_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:(?::(?P<version>[0-9]+))|(?:@(?P<alias>[A-Za-z0-9_.-]+)))?$"
)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``name``, ``name:version`` or ``name@alias``."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _MODEL_REF.match(text.strip())
        if match is None:
            raise ValueError(
                f"model reference {text!r} is not of the form NAME, NAME:VERSION or NAME@ALIAS "
                "(letters, digits, '_', '.', '-')"
            )
        return cls(match["name"], match["version"], match["alias"])

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


# Told one line of human-readable progress at a time (build, registry import and export, `fleet up`).
# The load generator's live figures are another thing: bench.plan.ProgressSnapshot.
Progress = Callable[[str], None]
