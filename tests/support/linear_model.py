"""A small real model artifact: an ONNX linear layer (scores = input · W + b, FP32 [-1, 4] → [-1, 3]).

Written with onnx.helper, so it loads in milliseconds and needs no training.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.manifest import Manifest, Source, TensorField, hash_tree
from modelfleet.types import Datatype

FEATURES = 4
CLASSES = 3


def _onnx_bytes(seed: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(CLASSES,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["scores"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def make_artifact(dest: Path, name: str = "linear", seed: int = 0) -> Path:
    """Write a real artifact folder (model.onnx + manifest.json) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(_onnx_bytes(seed))
    manifest = Manifest(
        name=name,
        task="generic",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=Source(kind="onnx", path=f"memory://linear-seed-{seed}", sha256="0" * 64),
        inputs=[TensorField(name="input", datatype=Datatype.FP32, shape=[-1, FEATURES])],
        outputs=[TensorField(name="scores", datatype=Datatype.FP32, shape=[-1, CLASSES])],
        files=hash_tree(dest),
    )
    (dest / "manifest.json").write_bytes(manifest.to_json_bytes())
    return dest


def infer_body(rows: int = 2, seed: int = 1, low: float | None = None) -> dict[str, Any]:
    """Normal inputs, or with ``low`` inputs uniform in [low, low + 1)."""
    rng = np.random.default_rng(seed)
    if low is None:
        data = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    else:
        data = (low + rng.random(size=(rows, FEATURES))).astype(np.float32)
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": data.ravel().tolist()}
        ]
    }


def _broken_onnx_bytes() -> bytes:
    """The linear model, but rows whose first input is ≥ 1 are dropped from its output (Compress). The
    server's warm-up inputs lie in [0, 1), so it loads and warms up at every batch size; a request with
    inputs ≥ 1 gets fewer output rows than it sent, which the server's batcher fails with a 500."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = numpy_helper.from_array(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), "W")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["all_scores"]),
            helper.make_node("Gather", ["input", "zero"], ["first"], axis=1),
            helper.make_node("Less", ["first", "one"], ["keep"]),
            helper.make_node("Compress", ["all_scores", "keep"], ["scores"], axis=0),
        ],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[weights, zero, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def make_broken_artifact(dest: Path, name: str = "linear") -> Path:
    """A real artifact with the linear model's interface that loads and warms up, and fails (500) every
    request whose first input is ≥ 1 (``infer_body(low=1.5)``): a deliberately broken new version."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(_broken_onnx_bytes())
    manifest = Manifest(
        name=name,
        task="generic",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=Source(kind="onnx", path="memory://linear-broken", sha256="0" * 64),
        inputs=[TensorField(name="input", datatype=Datatype.FP32, shape=[-1, FEATURES])],
        outputs=[TensorField(name="scores", datatype=Datatype.FP32, shape=[-1, CLASSES])],
        files=hash_tree(dest),
    )
    (dest / "manifest.json").write_bytes(manifest.to_json_bytes())
    return dest
