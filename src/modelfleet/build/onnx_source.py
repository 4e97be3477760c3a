"""An existing ONNX file as the source: validate it, describe its tensors, verify the copy against it.

The "source framework" here is ONNX Runtime running the original file with every graph optimization
off; the artifact is run at the chosen level (and precision), so the check covers what serving adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel, row_batchings
from modelfleet.build.messages import first_line
from modelfleet.build.options import BuildOptions
from modelfleet.build.verify import agreement_check, cosine_check, open_session, run_session
from modelfleet.errors import InvalidInput
from modelfleet.manifest import TensorField, Verification
from modelfleet.types import Datatype, Progress

# Variable dimensions get these sizes in generated samples: a batch of 8, other axes 16 long.
GENERATED_BATCH = 8
GENERATED_OTHER_DIM = 16
_VERIFICATION_SEED = 20240611
_CALIBRATION_SEED = 20240612
_MAX_SINGLE_FILE_BYTES = 2**31 - 1  # protobuf's limit for one serialized model

# onnx.TensorProto element types → V2 datatypes
_ONNX_TO_V2 = {
    1: Datatype.FP32,
    2: Datatype.UINT8,
    3: Datatype.INT8,
    4: Datatype.UINT16,
    5: Datatype.INT16,
    6: Datatype.INT32,
    7: Datatype.INT64,
    8: Datatype.BYTES,
    9: Datatype.BOOL,
    10: Datatype.FP16,
    11: Datatype.FP64,
    12: Datatype.UINT32,
    13: Datatype.UINT64,
}


def load_onnx(path: Path) -> Any:
    """Parse and check an ONNX file; InvalidInput (one line) if it is corrupt or invalid."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, truncated external data, ...
        raise InvalidInput(f"{path.name} is not a valid ONNX file: {first_line(exc)}") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise InvalidInput(f"{path.name} fails the ONNX checker: {first_line(exc)}") from None
    if not model.graph.output:
        raise InvalidInput(f"{path.name} is not a valid ONNX file: the graph has no outputs")
    return model


def tensor_fields(model: Any, which: str) -> list[TensorField]:
    """The graph's real inputs (initializers excluded) or outputs as V2 tensor fields."""
    initializers = {init.name for init in model.graph.initializer}
    values = model.graph.input if which == "inputs" else model.graph.output
    fields = []
    for value in values:
        if which == "inputs" and value.name in initializers:
            continue
        if value.type.WhichOneof("value") != "tensor_type":
            raise InvalidInput(
                f"graph {which[:-1]} {value.name!r} is a {value.type.WhichOneof('value')}, which V2 cannot "
                "carry (for scikit-learn classifiers convert with zipmap=False)"
            )
        tensor = value.type.tensor_type
        datatype = _ONNX_TO_V2.get(tensor.elem_type)
        if datatype is None:
            raise InvalidInput(f"graph {which[:-1]} {value.name!r} has an element type V2 does not support")
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
        fields.append(TensorField(name=value.name, datatype=datatype, shape=shape))
    return fields


def export_onnx(path: Path, work_dir: Path, options: BuildOptions, report: Progress) -> ExportedModel:
    import onnx

    report("loading source")
    model = load_onnx(path)
    inputs, outputs = tensor_fields(model, "inputs"), tensor_fields(model, "outputs")
    if model.ByteSize() > _MAX_SINGLE_FILE_BYTES:
        raise InvalidInput(
            f"{path.name} is over 2 GB; models that need external data files are not supported yet"
        )
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    onnx.save(model, str(onnx_path))  # one self-contained file, external data (if any) folded in
    feed = (
        load_feed(options.samples, inputs) if options.samples else generated_feed(inputs, _VERIFICATION_SEED)
    )
    threshold = options.cosine_threshold()

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        expected = run_session(open_session(path, "cpu", "disable"), feed)
        got = run_session(session, feed)
        checks = []
        for field in outputs:
            want, have = expected[field.name], got[field.name]
            label = f"[{field.name}]" if len(outputs) > 1 else ""
            if np.issubdtype(want.dtype, np.floating):
                rows = (want.reshape(1, -1), have.reshape(1, -1)) if want.ndim <= 1 else (want, have)
                checks.append(cosine_check(rows[0], rows[1], threshold, label))
            else:
                checks.append(agreement_check(want, have, label))
        return checks

    return ExportedModel(
        onnx_path=onnx_path,
        task="generic",
        inputs=inputs,
        outputs=outputs,
        verify=verify,
        calibration_feeds=row_batchings(generated_feed(inputs, _CALIBRATION_SEED)),
        libraries=("onnx",),
        extra={
            "onnx_opset": {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "verification_samples": "custom" if options.samples else "generated (fixed seed)",
        },
    )


def generated_feed(inputs: list[TensorField], seed: int) -> dict[str, Array]:
    """Fixed-seed inputs from the tensor specs: floats ~ N(0, 1), integers and bools 0/1.

    Integers stay 0/1 because integer inputs are usually ids or masks whose valid range we cannot know;
    0 and 1 are valid for both. Pass --samples for realistic inputs.
    """
    rng = np.random.default_rng(seed)
    feed: dict[str, Array] = {}
    for field in inputs:
        shape = [
            dim if dim > 0 else (GENERATED_BATCH if axis == 0 else GENERATED_OTHER_DIM)
            for axis, dim in enumerate(field.shape)
        ]
        if field.datatype is Datatype.BYTES:
            raise InvalidInput(
                f"cannot generate verification samples for text input {field.name!r}; pass --samples FILE.npz"
            )
        dtype = field.datatype.numpy_dtype
        if np.issubdtype(dtype, np.floating):
            feed[field.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[field.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


def load_feed(path: Path, inputs: list[TensorField]) -> dict[str, Array]:
    """Verification inputs from an .npz file holding one array per graph input."""
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise InvalidInput(f"samples file {path} is not a readable .npz file: {first_line(exc)}") from None
    missing = [field.name for field in inputs if field.name not in arrays]
    if missing:
        raise InvalidInput(f"samples file {path} lacks arrays for inputs {missing}")
    feed = {}
    for field in inputs:
        value = arrays[field.name]
        if not field.spec().accepts_shape(tuple(value.shape)):
            raise InvalidInput(
                f"samples for {field.name!r} have shape {list(value.shape)}, the graph wants {field.shape}"
            )
        feed[field.name] = value.astype(field.datatype.numpy_dtype)
    return feed
