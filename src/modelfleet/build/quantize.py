"""int8: ONNX Runtime dynamic quantization (QInt8 weights, per output channel) with an accuracy guard.

Dynamic quantization turns each MatMul with a constant weight into an integer matmul whose activation
scale is computed per run; constant embedding tables (Gather) are stored as int8 too, which halves a
transformer's file and memory size. Transformer activations carry a few very large outlier features (strongest
on the inputs of the feed-forward block), so quantizing every MatMul can cost more accuracy than the
build allows: all-MiniLM-L6-v2 drops to a min cosine of ~0.95 on short sentences. We therefore try
recipes from fastest to most accurate and keep the first that holds the threshold, plus a small
safety margin, on calibration inputs (which the later verification does not reuse):

1. ``all-weights``: every MatMul with a constant weight.
2. ``keep-ffn-expansion-fp32``: as 1, but weights that widen the hidden size (the feed-forward
   up-projection, found by shape, not by name) stay fp32.
3. ``keep-ffn-fp32``: only square weights (attention projections) are quantized.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.messages import first_line
from modelfleet.build.verify import cosine_rows, run_session
from modelfleet.errors import InvalidInput

Array = np.ndarray[Any, Any]
SessionFactory = Callable[[Path], Any]

_QUANTIZED_OP_TYPES = ("MatMulInteger", "DynamicQuantizeMatMul")
# Calibration and verification inputs differ, so a recipe that only just clears the threshold on one
# may miss it on the other; demand this much headroom before settling on a faster recipe.
CALIBRATION_MARGIN = 0.002


@dataclass(frozen=True, slots=True)
class WeightMatMul:
    node_name: str
    in_features: int
    out_features: int


@dataclass(frozen=True, slots=True)
class QuantizationReport:
    method: str
    weight_type: str
    per_channel: bool
    recipe: str
    quantized_matmuls: int
    fp32_weight_nodes: int
    calibration_samples: int
    calibration_min_cosine: float
    calibration_batchings: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_int8(
    fp32_model: Path,
    output: Path,
    calibration_feeds: Sequence[Mapping[str, Array]],
    threshold: float,
    open_session: SessionFactory,
    work_dir: Path,
) -> QuantizationReport:
    """Write an int8 model to `output`; returns which recipe was kept and how it scored."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = _prepare(fp32_model, work_dir / "prepared.onnx")
    weights = weight_matmuls(prepared)
    if not weights:
        raise InvalidInput(
            "int8: the graph has no MatMul with constant weights for dynamic quantization to work on; "
            "build with --precision fp32"
        )
    reference_session = open_session(prepared)
    references = [run_session(reference_session, feed) for feed in calibration_feeds]
    samples = len(next(iter(calibration_feeds[0].values())))  # the first feed holds every input once
    candidate = work_dir / "candidate.onnx"
    chosen: tuple[str, int, float] | None = None
    seen: set[frozenset[str]] = set()
    for recipe, keep_fp32 in _recipes(weights):
        if keep_fp32 in seen or len(keep_fp32) == len(weights):
            continue
        seen.add(keep_fp32)
        try:
            with _quiet_quantizer():
                quantize_dynamic(
                    prepared,
                    candidate,
                    op_types_to_quantize=["MatMul", "Gather"],
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=sorted(keep_fp32),
                    # MatMulConstBOnly: activation x activation products (attention scores) stay fp32.
                    # DefaultTensorType: ONNX shape inference cannot type the outputs of ai.onnx.ml ops
                    # (scikit-learn graphs); everything we quantize is float.
                    extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        except Exception as exc:
            raise InvalidInput(
                f"int8 quantization failed: {first_line(exc)}; build with --precision fp32"
            ) from None
        candidate_session = open_session(candidate)
        score = min(
            _agreement(reference, run_session(candidate_session, feed))
            for reference, feed in zip(references, calibration_feeds, strict=True)
        )
        candidate.replace(output)
        chosen = (recipe, len(keep_fp32), score)
        if score >= min(threshold + CALIBRATION_MARGIN, 1.0):
            break
    if chosen is None:  # every recipe would keep everything fp32: nothing to quantize
        raise InvalidInput("int8: no weights left to quantize; build with --precision fp32")
    recipe, kept, score = chosen
    return QuantizationReport(
        method="onnxruntime.quantize_dynamic",
        weight_type="QInt8",
        per_channel=True,
        recipe=recipe,
        quantized_matmuls=_count_quantized(output),
        fp32_weight_nodes=kept,
        calibration_samples=samples,
        calibration_min_cosine=score,
        calibration_batchings=len(calibration_feeds),
    )


def weight_matmuls(model_path: Path) -> list[WeightMatMul]:
    """MatMul nodes whose second input is a 2-D constant weight, with the weight's shape."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            dims = shapes.get(node.input[1])
            if dims is not None and len(dims) == 2:
                found.append(WeightMatMul(node.name, int(dims[0]), int(dims[1])))
    return found


def _recipes(weights: list[WeightMatMul]) -> Iterator[tuple[str, frozenset[str]]]:
    expanding = frozenset(w.node_name for w in weights if w.out_features > w.in_features)
    non_square = frozenset(w.node_name for w in weights if w.out_features != w.in_features)
    yield "all-weights", frozenset()
    yield "keep-ffn-expansion-fp32", expanding
    yield "keep-ffn-fp32", non_square


def _prepare(fp32_model: Path, prepared: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + basic graph optimization), unique node names."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # Symbolic shape inference cannot follow the exporter's Min(512, sequence) slicing; ONNX's own
        # shape inference can, and it is all dynamic quantization needs.
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=True)
        source = prepared
    except Exception:  # pre-processing is an optimization; quantizing without it still works
        source = fp32_model
    model = onnx.load(str(source))
    used: set[str] = set()
    for index, node in enumerate(model.graph.node):
        # nodes_to_exclude works by name: give every node a unique one
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{index}"
        used.add(node.name)
    onnx.save(model, str(prepared))
    return prepared


def _agreement(reference: dict[str, Array], candidate: dict[str, Array]) -> float:
    """Min cosine similarity over rows of the float outputs; 1/0 for exact agreement of the others."""
    scores = []
    for name, want in reference.items():
        have = candidate[name]
        if np.issubdtype(want.dtype, np.floating):
            rows = (want.reshape(1, -1), have.reshape(1, -1)) if want.ndim <= 1 else (want, have)
            scores.append(float(cosine_rows(*rows).min()))
        else:
            scores.append(1.0 if np.array_equal(want, have) else 0.0)
    return min(scores, default=1.0)


def _count_quantized(model_path: Path) -> int:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sum(1 for node in model.graph.node if node.op_type in _QUANTIZED_OP_TYPES)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice on the root logger; keep the CLI's stderr for our own progress."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
