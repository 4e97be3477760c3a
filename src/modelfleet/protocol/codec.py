"""Decode V2 inference requests and encode responses: JSON tensors and the binary tensor data extension.

Binary extension (Triton's, which V2 clients such as `tritonclient` use by default): the body is a
JSON header of `Inference-Header-Content-Length` bytes followed by raw tensor bytes, in input order;
each binary input carries `parameters.binary_data_size`. BYTES elements are a 4-byte little-endian
length followed by the bytes. Outputs are binary when the request asks (`parameters.binary_data` on
the output, or `parameters.binary_data_output` on the request).

Everything here works on numpy arrays without per-element Python loops except where the format
forces one (BYTES).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelfleet.errors import InvalidInput
from modelfleet.types import Datatype

HEADER_CONTENT_LENGTH = "inference-header-content-length"
_LENGTH_PREFIX = struct.Struct("<I")
_DATATYPES = {d.value: d for d in Datatype}


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    inputs: list[InputTensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # None means "all outputs"; then `binary_outputs` says how to send them.
    outputs: list[RequestedOutput] | None = None
    binary_outputs: bool = False

    def timeout_s(self) -> float | None:
        """Triton's `parameters.timeout` is in microseconds; a client's own deadline for this request."""
        value = self.parameters.get("timeout")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value) / 1e6
        return None


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None


def _element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _parse_shape(raw: object, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def _decode_bytes_elements(buffer: memoryview, name: str) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = _LENGTH_PREFIX.unpack_from(buffer, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input '{name}': BYTES element of {length} bytes runs past the end of the data"
            )
        items.append(bytes(buffer[offset : offset + length]))
        offset += length
    return items


def encode_bytes_elements(values: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for item in values.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH_PREFIX.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _from_binary(
    buffer: memoryview, datatype: Datatype, shape: tuple[int, ...], name: str
) -> np.ndarray[Any, Any]:
    count = _element_count(shape)
    if datatype is Datatype.BYTES:
        items = _decode_bytes_elements(buffer, name)
        if len(items) != count:
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} needs {count} elements, binary data holds {len(items)}"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    expected = count * datatype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype.value} needs {expected} bytes, got {len(buffer)}"
        )
    # frombuffer views the request body: no copy on the hot path.
    return np.frombuffer(buffer, dtype=datatype.numpy_dtype).reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    # V2 allows nested (row-major) JSON lists; flatten only when the first element is a list.
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        stack = [data]
        while stack:
            current = stack.pop()
            if current and isinstance(current[0], list):
                stack.extend(reversed(current))
            else:
                flat.extend(current)
        return flat
    return data


def _from_json(data: object, datatype: Datatype, shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list")
    flat = _flatten(data)
    count = _element_count(shape)
    if len(flat) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, 'data' holds {len(flat)}"
        )
    if datatype is Datatype.BYTES:
        array = np.empty(count, dtype=object)
        try:
            array[:] = [item.encode() if isinstance(item, str) else bytes(item) for item in flat]
        except (TypeError, ValueError):
            raise InvalidInput(f"input '{name}': BYTES data must be strings") from None
        return array.reshape(shape)
    try:
        array = np.asarray(flat, dtype=datatype.numpy_dtype)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"input '{name}': data is not all {datatype.value} values") from None
    if (
        datatype is not Datatype.BOOL
        and array.dtype.kind in "iu"
        and any(isinstance(v, float) for v in flat[:16])
    ):
        raise InvalidInput(f"input '{name}': {datatype.value} data must be integers")
    return array.reshape(shape)


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an infer request body. Raises InvalidInput with a message a client can act on."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body of {len(body)} bytes"
            )
        json_part, binary_part = body[:header_length], memoryview(body)[header_length:]
    else:
        json_part, binary_part = body, memoryview(b"")
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")

    inputs: list[InputTensor] = []
    offset = 0
    for position, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise InvalidInput(f"inputs[{position}] must be an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"inputs[{position}] needs a 'name'")
        datatype = _DATATYPES.get(raw.get("datatype"))  # type: ignore[arg-type]
        if datatype is None:
            raise InvalidInput(
                f"input '{name}': unknown datatype {raw.get('datatype')!r}; use one of {sorted(_DATATYPES)}"
            )
        shape = _parse_shape(raw.get("shape"), name)
        input_parameters = raw.get("parameters") or {}
        binary_size = input_parameters.get("binary_data_size") if isinstance(input_parameters, dict) else None
        if binary_size is not None:
            if not isinstance(binary_size, int) or binary_size < 0:
                raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
            if offset + binary_size > len(binary_part):
                raise InvalidInput(
                    f"input '{name}': binary_data_size {binary_size} runs past the end of the body "
                    "(is Inference-Header-Content-Length set?)"
                )
            data = _from_binary(binary_part[offset : offset + binary_size], datatype, shape, name)
            offset += binary_size
        elif "data" in raw:
            data = _from_json(raw["data"], datatype, shape, name)
        else:
            raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
        inputs.append(InputTensor(name, datatype, shape, data))
    if offset != len(binary_part):
        raise InvalidInput(f"{len(binary_part) - offset} bytes of binary data follow the inputs unused")

    outputs: list[RequestedOutput] | None = None
    binary_default = parameters.get("binary_data_output") is True
    raw_outputs = document.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            output_parameters = raw.get("parameters") or {}
            if output_parameters.get("classification", 0):
                raise InvalidInput("the classification extension is not supported; request the raw output")
            binary = output_parameters.get("binary_data", binary_default)
            outputs.append(RequestedOutput(raw["name"], bool(binary)))
    request_id = document.get("id")
    return InferRequest(
        inputs=inputs,
        id=str(request_id) if request_id is not None else None,
        parameters=parameters,
        outputs=outputs,
        binary_outputs=binary_default,
    )


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response. Returns the body and, when binary tensors follow, the JSON header's length."""
    if request.outputs is None:
        wanted = [(name, request.binary_outputs) for name in response.outputs]
    else:
        wanted = [(output.name, output.binary) for output in request.outputs]
    json_outputs: list[dict[str, Any]] = []
    binary_chunks: list[bytes] = []
    for name, binary in wanted:
        array = response.outputs[name]
        datatype = Datatype.from_numpy(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype.value, "shape": list(array.shape)}
        if binary:
            raw = (
                encode_bytes_elements(array)
                if datatype is Datatype.BYTES
                else np.ascontiguousarray(array).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_chunks.append(raw)
        elif datatype is Datatype.BYTES:
            try:
                entry["data"] = [
                    item.decode() if isinstance(item, bytes) else str(item) for item in array.ravel()
                ]
            except UnicodeDecodeError:
                raise InvalidInput(f"output '{name}' is not UTF-8; request it with binary_data") from None
        else:
            entry["data"] = np.ascontiguousarray(array).ravel()
        json_outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": json_outputs,
    }
    if response.id is not None:
        document["id"] = response.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_chunks:
        return header, None
    return header + b"".join(binary_chunks), len(header)
