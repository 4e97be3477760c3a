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


def infer_body(rows: int = 2, seed: int = 1) -> dict[str, Any]:
    data = np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, FEATURES], "data": data.ravel().tolist()}
        ]
    }
