"""Generated tensors through the codec: what a V2 client encodes (JSON or binary) decodes to the same
array, and arbitrary binary tensor data is decoded or refused with a 4xx, never anything else.

tritonclient encodes the binary side, so this checks the wire format against a real client, not
against our own encoder. (Arbitrary JSON documents are in test_protocol_codec.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.utils import serialize_byte_tensor

from modelfleet.errors import InvalidInput
from modelfleet.protocol.codec import DecodeLimits, decode_request
from modelfleet.types import Datatype

LIMITS = DecodeLimits(max_element_bytes=4096, max_tensor_bytes=1 << 20)
NUMERIC = [d for d in Datatype if d is not Datatype.BYTES]
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)


@st.composite
def numeric_tensors(draw: st.DrawFn) -> tuple[Datatype, np.ndarray[Any, Any]]:
    datatype = draw(st.sampled_from(NUMERIC))
    elements = None
    if datatype.numpy_dtype.kind == "f":
        elements = st.floats(width=datatype.numpy_dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    array = draw(hnp.arrays(datatype.numpy_dtype, shapes, elements=elements))
    return datatype, array


texts = st.text(max_size=40) | st.binary(max_size=40).map(lambda raw: raw.decode("latin-1"))


def _request(name: str, datatype: Datatype, shape: tuple[int, ...], data: object) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": name, "datatype": datatype.value, "shape": list(shape), "data": data}]}
    )


def _binary_request(name: str, datatype: Datatype, shape: tuple[int, ...], raw: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype.value,
                    "shape": list(shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    return header + raw, len(header)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(numeric_tensors(), st.booleans(), st.booleans())
def test_numeric_tensors_round_trip_as_json_and_binary(
    tensor: tuple[Datatype, np.ndarray[Any, Any]], binary: bool, nested: bool
) -> None:
    datatype, array = tensor
    if binary:
        body, header_length = _binary_request("x", datatype, array.shape, array.tobytes())
        decoded = decode_request(body, header_length, LIMITS).inputs[0]
    else:
        data = array.tolist() if nested else array.ravel().tolist()
        decoded = decode_request(_request("x", datatype, array.shape, data), None, LIMITS).inputs[0]
    assert decoded.datatype is datatype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded.data, array)


@settings(max_examples=1500, deadline=None)
@given(st.lists(texts, min_size=1, max_size=8), st.booleans())
def test_text_tensors_round_trip_as_json_and_binary(items: list[str], binary: bool) -> None:
    expected = [item.encode() for item in items]
    if binary:
        raw = serialize_byte_tensor(np.array(expected, dtype=object)).item()
        body, header_length = _binary_request("text", Datatype.BYTES, (len(items),), raw)
        decoded = decode_request(body, header_length, LIMITS).inputs[0]
    else:
        decoded = decode_request(_request("text", Datatype.BYTES, (len(items),), items), None, LIMITS).inputs[
            0
        ]
    assert [bytes(item) for item in decoded.data.ravel()] == expected


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from(list(Datatype)),
    st.lists(st.integers(0, 5), min_size=1, max_size=3),
    st.binary(max_size=64)
    | st.lists(st.binary(max_size=12), max_size=6).map(
        lambda items: serialize_byte_tensor(np.array(items, dtype=object)).item() if items else b""
    ),
)
def test_arbitrary_binary_tensor_data_is_decoded_or_refused(
    datatype: Datatype, shape: list[int], raw: bytes
) -> None:
    body, header_length = _binary_request("x", datatype, tuple(shape), raw)
    try:
        decoded = decode_request(body, header_length, LIMITS).inputs[0]
    except InvalidInput as exc:
        assert 400 <= exc.http_status < 500
        return
    assert decoded.data.shape == tuple(shape)
    if datatype is not Datatype.BYTES:
        assert decoded.data.nbytes == len(raw)
