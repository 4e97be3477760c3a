"""Decode V2 inference requests and encode responses: JSON tensors and the binary tensor data extension.

Binary extension (Triton's, which V2 clients such as `tritonclient` use by default): the body is a
JSON header of `Inference-Header-Content-Length` bytes followed by raw tensor bytes, in input order;
each binary input carries `parameters.binary_data_size`. BYTES elements are a 4-byte little-endian
length followed by the bytes. Outputs are binary when the request asks (`parameters.binary_data` on
the output, or `parameters.binary_data_output` on the request).

JSON data must have the JSON type of its datatype: strings for BYTES (base64 strings when the input
has `parameters.content_type: "base64"`, as MLServer spells it), integers for INT*/UINT* (not
true/false, and within the type's range), numbers for FP*, true/false for BOOL; flat, or nested
exactly as the shape says. Sizes a client controls are checked against `DecodeLimits` (the server's
`max_element_bytes`, `max_tensor_bytes`) with Python ints before anything of that size is allocated.

Everything here works on numpy arrays without per-element Python loops except where the format
forces one (BYTES).
"""

from __future__ import annotations

import binascii
import reprlib
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelfleet.errors import InvalidInput, PayloadTooLarge
from modelfleet.protocol.json_scan import refuse_long_strings
from modelfleet.types import Datatype

HEADER_CONTENT_LENGTH = "inference-header-content-length"
_LENGTH_PREFIX = struct.Struct("<I")
_DATATYPES = {d.value: d for d in Datatype}
# numpy's own limit is 64; no model here takes more than a handful.
MAX_DIMS = 32
# Names end up in error messages; no model's tensor name comes near this.
MAX_NAME_CHARS = 256
# `inputs[].parameters.content_type` that marks BYTES data as base64 strings (MLServer's name and value).
CONTENT_TYPE_BASE64 = "base64"


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one request may make the server allocate; the server config's fields of the same names."""

    max_element_bytes: int = 1024 * 1024
    max_tensor_bytes: int = 64 * 1024 * 1024


DEFAULT_LIMITS = DecodeLimits()


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


def _parse_shape(raw: object, name: str, limits: DecodeLimits) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInput(
            f"input '{name}': shape must be a list of non-negative integers, got {reprlib.repr(raw)}"
        )
    if len(raw) > MAX_DIMS:
        raise InvalidInput(
            f"input '{name}': shape has {len(raw)} dimensions, over the fixed limit of {MAX_DIMS}"
        )
    # No legal tensor has a dimension larger than the byte limit (every element costs at least a byte);
    # checking each one also keeps a zero elsewhere from smuggling an impossible shape into numpy.
    if any(d > limits.max_tensor_bytes for d in raw):
        raise InvalidInput(
            f"input '{name}': shape {raw} has a dimension over the limit of {limits.max_tensor_bytes} "
            f"(server.max_tensor_bytes)"
        )
    return tuple(raw)


def _element_count(shape: tuple[int, ...]) -> int:
    # Python ints: the product of client-given dimensions is compared with the limits before numpy sees it.
    count = 1
    for dim in shape:
        count *= dim
    return count


class _Budget:
    """Decoded tensor bytes of one request so far, against server.max_tensor_bytes."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int, name: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise PayloadTooLarge(
                f"input '{name}': the request's tensors need {self.used} bytes decoded, over the limit "
                f"of {self.limit} bytes (server.max_tensor_bytes)"
            )


def _element_too_large(name: str, size: int, limits: DecodeLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"input '{name}': a BYTES element of {size} bytes is over the limit of {limits.max_element_bytes} "
        "bytes (server.max_element_bytes)"
    )


def _decode_bytes_elements(buffer: memoryview, name: str, count: int, limits: DecodeLimits) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(buffer)
    while offset < end:
        if len(items) == count:
            raise InvalidInput(
                f"input '{name}': binary data holds more than the {count} elements of its shape"
            )
        if offset + 4 > end:
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = _LENGTH_PREFIX.unpack_from(buffer, offset)
        offset += 4
        if length > limits.max_element_bytes:
            raise _element_too_large(name, length, limits)
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


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def _from_binary(
    buffer: memoryview,
    datatype: Datatype,
    shape: tuple[int, ...],
    name: str,
    limits: DecodeLimits,
    budget: _Budget,
) -> np.ndarray[Any, Any]:
    count = _element_count(shape)
    if datatype is Datatype.BYTES:
        # Each element carries a 4-byte length, so the buffer's size bounds the count before any parsing.
        if count * _LENGTH_PREFIX.size > len(buffer):
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} needs {count} BYTES elements, "
                f"more than {len(buffer)} bytes of binary data can hold"
            )
        budget.take(len(buffer), name)
        items = _decode_bytes_elements(buffer, name, count, limits)
        if len(items) != count:
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} needs {count} elements, binary data holds {len(items)}"
            )
        return _object_array(items, shape)
    expected = count * datatype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype.value} needs {expected} bytes, got {len(buffer)}"
        )
    budget.take(expected, name)
    # frombuffer views the request body: no copy on the hot path.
    return np.frombuffer(buffer, dtype=datatype.numpy_dtype).reshape(shape)


def _flatten(data: list[Any], shape: tuple[int, ...], name: str) -> list[Any]:
    """Flat data as given, or nested (row-major) data whose every level matches `shape` exactly.

    One Python step per row, not per element; leaves are type-checked by the caller.
    """
    if not data or not isinstance(data[0], list):
        return data
    level: list[Any] = [data]
    for depth, dim in enumerate(shape):
        children: list[Any] = []
        for node in level:
            if not isinstance(node, list) or len(node) != dim:
                raise InvalidInput(
                    f"input '{name}': nested 'data' does not match shape {list(shape)} "
                    f"(dimension {depth} must be a list of {dim})"
                )
            children.extend(node)
        level = children
    return level


_JSON_TYPES: dict[Datatype, tuple[frozenset[type], str]] = {
    Datatype.BOOL: (frozenset({bool}), "true/false"),
    Datatype.BYTES: (frozenset({str}), "strings"),
    **{d: (frozenset({int}), "integers") for d in Datatype if d.value.startswith(("INT", "UINT"))},
    **{d: (frozenset({int, float}), "numbers") for d in (Datatype.FP16, Datatype.FP32, Datatype.FP64)},
}
_JSON_NAMES = {
    bool: "true/false",
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _bytes_from_json(
    flat: list[str], shape: tuple[int, ...], name: str, base64: bool, limits: DecodeLimits, budget: _Budget
) -> np.ndarray[Any, Any]:
    limit = limits.max_element_bytes
    # Length in characters bounds the encoded size from below (UTF-8) or above (base64: 3 bytes per 4
    # characters), so an oversized element is refused before it is encoded or decoded.
    longest = max(map(len, flat), default=0)
    if (longest * 3 // 4 if base64 else longest) > limit:
        raise _element_too_large(name, longest * 3 // 4 if base64 else longest, limits)
    try:
        if base64:
            items = [binascii.a2b_base64(item, strict_mode=True) for item in flat]
        else:
            items = [item.encode() for item in flat]
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"input '{name}': BYTES data with content_type base64 must be base64 strings"
        ) from None
    except UnicodeEncodeError:
        raise InvalidInput(f"input '{name}': BYTES data must be valid Unicode strings") from None
    sizes = list(map(len, items))
    if max(sizes, default=0) > limit:
        raise _element_too_large(name, max(sizes), limits)
    budget.take(sum(sizes) + _LENGTH_PREFIX.size * len(sizes), name)
    return _object_array(items, shape)


def _from_json(
    data: object,
    datatype: Datatype,
    shape: tuple[int, ...],
    name: str,
    base64: bool,
    limits: DecodeLimits,
    budget: _Budget,
) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': 'data' must be a list")
    count = _element_count(shape)
    flat = _flatten(data, shape, name)
    if len(flat) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, 'data' holds {len(flat)}"
        )
    allowed, wanted = _JSON_TYPES[datatype]
    # One C-speed pass: the set of Python types orjson produced (bool is not int here, nor list a leaf).
    kinds = set(map(type, flat))
    if not kinds <= allowed:
        found = _JSON_NAMES.get(next(iter(kinds - allowed)), "another JSON type")
        raise InvalidInput(
            f"input '{name}': data is not all {datatype.value} values: they must be {wanted}, found {found}"
        )
    if datatype is Datatype.BYTES:
        return _bytes_from_json(flat, shape, name, base64, limits, budget)
    budget.take(count * datatype.itemsize, name)
    try:
        # A float beyond FP16/FP32 range becomes inf (refused below), not a logged warning.
        with np.errstate(over="ignore"):
            array = np.asarray(flat, dtype=datatype.numpy_dtype)
    except OverflowError:
        raise InvalidInput(f"input '{name}': a value is out of the range of {datatype.value}") from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"input '{name}': a value is out of the range of {datatype.value}")
    return array.reshape(shape)


def _parameters(raw: object, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return raw


def _flag(parameters: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameters.{key} must be true or false")
    return value


def _decode_input(
    position: int,
    raw: object,
    binary_part: memoryview,
    offset: int,
    seen: set[str],
    limits: DecodeLimits,
    budget: _Budget,
) -> tuple[InputTensor, int]:
    """One input tensor and the binary offset after it."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{position}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{position}] needs a 'name'")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"inputs[{position}]: a name is at most {MAX_NAME_CHARS} characters (a fixed limit)"
        )
    if name in seen:
        raise InvalidInput(f"input '{name}' is given twice")
    seen.add(name)
    raw_datatype = raw.get("datatype")
    datatype = _DATATYPES.get(raw_datatype) if isinstance(raw_datatype, str) else None
    if datatype is None:
        raise InvalidInput(
            f"input '{name}': unknown datatype {reprlib.repr(raw_datatype)}; use one of {sorted(_DATATYPES)}"
        )
    shape = _parse_shape(raw.get("shape"), name, limits)
    parameters = _parameters(raw.get("parameters"), f"input '{name}'")
    content_type = parameters.get("content_type")
    if content_type not in (None, "str", CONTENT_TYPE_BASE64):
        raise InvalidInput(
            f"input '{name}': parameters.content_type {reprlib.repr(content_type)} is not "
            f"supported; use '{CONTENT_TYPE_BASE64}' for base64-encoded BYTES data"
        )
    base64 = content_type == CONTENT_TYPE_BASE64
    if base64 and datatype is not Datatype.BYTES:
        raise InvalidInput(f"input '{name}': content_type base64 applies to BYTES data only")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + binary_size > len(binary_part):
            raise InvalidInput(
                f"input '{name}': binary_data_size {binary_size} runs past the end of the body "
                "(is Inference-Header-Content-Length set?)"
            )
        chunk = binary_part[offset : offset + binary_size]
        data = _from_binary(chunk, datatype, shape, name, limits, budget)
        return InputTensor(name, datatype, shape, data), offset + binary_size
    if "data" not in raw:
        raise InvalidInput(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    data = _from_json(raw["data"], datatype, shape, name, base64, limits, budget)
    return InputTensor(name, datatype, shape, data), offset


def _decode_outputs(raw_outputs: object, binary_default: bool) -> list[RequestedOutput] | None:
    if raw_outputs is None:
        return None
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for position, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput(f"outputs[{position}] needs a 'name'")
        if len(raw["name"]) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"outputs[{position}]: a name is at most {MAX_NAME_CHARS} characters (a fixed limit)"
            )
        where = f"output '{raw['name']}'"
        parameters = _parameters(raw.get("parameters"), where)
        if parameters.get("classification", 0):
            raise InvalidInput("the classification extension is not supported; request the raw output")
        outputs.append(RequestedOutput(raw["name"], _flag(parameters, "binary_data", where, binary_default)))
    return outputs


def decode_request(
    body: bytes | bytearray, header_length: int | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> InferRequest:
    """Parse an infer request body. Raises InvalidInput (400/413) with a message a client can act on.

    Every check on a client-given size (shape, element length, decoded bytes) runs before the
    allocation it guards; no JSON shape reaches a KeyError/TypeError/AttributeError.
    """
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body of {len(body)} bytes"
            )
        json_part, binary_part = body[:header_length], memoryview(body)[header_length:]
    else:
        json_part, binary_part = body, memoryview(b"")
    refuse_long_strings(json_part, limits.max_element_bytes)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")
    parameters = _parameters(document.get("parameters"), "request")
    binary_default = _flag(parameters, "binary_data_output", "request", False)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")

    budget = _Budget(limits.max_tensor_bytes)
    inputs: list[InputTensor] = []
    seen: set[str] = set()
    offset = 0
    for position, raw in enumerate(raw_inputs):
        tensor, offset = _decode_input(position, raw, binary_part, offset, seen, limits, budget)
        inputs.append(tensor)
    if offset != len(binary_part):
        raise InvalidInput(f"{len(binary_part) - offset} bytes of binary data follow the inputs unused")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=_decode_outputs(document.get("outputs"), binary_default),
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


class TensorDecoder:
    """Input tensors from raw bytes for a protocol other than REST (gRPC's `raw_input_contents` and typed
    `contents`), under the same checks and one request's `server.max_tensor_bytes` budget."""

    __slots__ = ("_budget", "_limits", "_seen")

    def __init__(self, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._budget = _Budget(limits.max_tensor_bytes)
        self._seen: set[str] = set()

    def header(
        self, position: int, name: str, raw_datatype: str, raw_shape: list[int]
    ) -> tuple[Datatype, tuple[int, ...]]:
        """Check one input's name, datatype and shape; returns the datatype and shape."""
        if not name:
            raise InvalidInput(f"inputs[{position}] needs a 'name'")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"inputs[{position}]: a name is at most {MAX_NAME_CHARS} characters (a fixed limit)"
            )
        if name in self._seen:
            raise InvalidInput(f"input '{name}' is given twice")
        self._seen.add(name)
        datatype = _DATATYPES.get(raw_datatype)
        if datatype is None:
            raise InvalidInput(
                f"input '{name}': unknown datatype {reprlib.repr(raw_datatype)}; use one of {sorted(_DATATYPES)}"
            )
        return datatype, _parse_shape(raw_shape, name, self._limits)

    def raw(self, name: str, datatype: Datatype, shape: tuple[int, ...], buffer: memoryview) -> InputTensor:
        """A tensor from its binary form (BYTES: 4-byte little-endian length prefixes); views `buffer`."""
        return InputTensor(
            name, datatype, shape, _from_binary(buffer, datatype, shape, name, self._limits, self._budget)
        )

    def typed(self, name: str, datatype: Datatype, shape: tuple[int, ...], values: Any) -> InputTensor:
        """A tensor from a sequence of values already parsed (gRPC's typed `contents`)."""
        count = _element_count(shape)
        if len(values) != count:
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} needs {count} elements, contents hold {len(values)}"
            )
        if datatype is Datatype.BYTES:
            items = list(values)
            sizes = list(map(len, items))
            if max(sizes, default=0) > self._limits.max_element_bytes:
                raise _element_too_large(name, max(sizes), self._limits)
            self._budget.take(sum(sizes) + _LENGTH_PREFIX.size * len(sizes), name)
            return InputTensor(name, datatype, shape, _object_array(items, shape))
        self._budget.take(count * datatype.itemsize, name)
        try:
            with np.errstate(over="ignore"):
                array = np.asarray(values, dtype=datatype.numpy_dtype)
        except OverflowError:
            raise InvalidInput(f"input '{name}': a value is out of the range of {datatype.value}") from None
        return InputTensor(name, datatype, shape, array.reshape(shape))
