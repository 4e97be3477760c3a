"""A small real model artifact: a scikit-learn logistic regression converted to ONNX (FP32 [-1, 4] in)."""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelfleet.manifest import Manifest, Source, TensorField, Verification, hash_tree
from modelfleet.types import Datatype

FEATURES = 4


@functools.lru_cache(maxsize=8)
def _onnx_bytes(seed: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(120, FEATURES)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64) + (features[:, 2] > 1).astype(np.int64)
    model = LogisticRegression(max_iter=200).fit(features, labels)
    onnx_model = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, FEATURES]))],
        options={id(model): {"zipmap": False}},
        target_opset=15,
    )
    return bytes(onnx_model.SerializeToString())


def sample_inputs(rows: int = 16, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def make_artifact(dest: Path, *, name: str = "iris", seed: int = 0, pad_bytes: int = 0) -> Path:
    """Write a real artifact folder (model.onnx, optional padding file, manifest.json) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(_onnx_bytes(seed))
    if pad_bytes:
        # Incompressible padding so a copy takes long enough to interrupt.
        with (dest / "weights.bin").open("wb") as handle:
            remaining = pad_bytes
            while remaining:
                chunk = os.urandom(min(remaining, 1 << 22))
                handle.write(chunk)
                remaining -= len(chunk)
    manifest = Manifest(
        name=name,
        task="classification",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=Source(kind="sklearn", path=f"memory://logreg-seed-{seed}", sha256="0" * 64),
        inputs=[TensorField(name="input", datatype=Datatype.FP32, shape=[-1, FEATURES])],
        outputs=[
            TensorField(name="label", datatype=Datatype.INT64, shape=[-1]),
            TensorField(name="probabilities", datatype=Datatype.FP32, shape=[-1, 3]),
        ],
        files=hash_tree(dest),
        verification=[
            Verification(samples=32, metric="label_agreement", value=1.0, threshold=0.99, passed=True)
        ],
        libraries={"scikit-learn": "test", "skl2onnx": "test"},
    )
    (dest / "manifest.json").write_bytes(manifest.to_json_bytes())
    return dest


def run_model(artifact_dir: Path, inputs: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, {"input": inputs})]
