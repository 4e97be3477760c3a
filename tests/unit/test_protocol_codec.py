"""The V2 codec against the spec and against tritonclient's own encoders (no sockets)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from modelfleet.errors import InvalidInput, PayloadTooLarge
from modelfleet.protocol import DecodeLimits, InferResponse, decode_request, encode_response


def _json_body(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def test_json_numeric_flat_and_nested() -> None:
    flat = decode_request(
        _json_body([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}])
    )
    nested = decode_request(
        _json_body([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}])
    )
    for request in (flat, nested):
        array = request.inputs[0].data
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, [[1, 2], [3, 4]])


def test_json_bytes_become_utf8_objects() -> None:
    request = decode_request(
        _json_body([{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "x"]}])
    )
    assert list(request.inputs[0].data) == ["héllo".encode(), b"x"]


def test_binary_extension_matches_tritonclient_encoding() -> None:
    texts = np.array([b"a man plays guitar", b"", "héllo".encode()], dtype=object)
    numbers = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw_text = serialize_byte_tensor(texts).item()
    raw_numbers = numbers.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [3],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw_text)},
                },
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw_numbers)},
                },
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    request = decode_request(header + raw_text + raw_numbers, len(header))
    assert list(request.inputs[0].data) == list(texts)
    np.testing.assert_array_equal(request.inputs[1].data, numbers)
    assert request.binary_outputs is True


def test_encode_binary_output_is_readable_by_tritonclient() -> None:
    request = decode_request(
        _json_body(
            [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}],
            parameters={"binary_data_output": True},
        )
    )
    embedding = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    labels = np.array([b"cat", b"dog"], dtype=object)
    body, json_length = encode_response(
        InferResponse("m", "1", {"embedding": embedding, "label": labels}, "abc"), request
    )
    assert json_length is not None
    header = orjson.loads(body[:json_length])
    assert header["id"] == "abc" and header["model_name"] == "m"
    first, second = header["outputs"]
    start = json_length
    got = np.frombuffer(
        body[start : start + first["parameters"]["binary_data_size"]], dtype=np.float32
    ).reshape(first["shape"])
    np.testing.assert_array_equal(got, embedding)
    start += first["parameters"]["binary_data_size"]
    decoded = deserialize_bytes_tensor(body[start : start + second["parameters"]["binary_data_size"]])
    assert list(decoded) == [b"cat", b"dog"]


def test_encode_json_output_and_requested_subset() -> None:
    request = decode_request(
        _json_body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}], outputs=[{"name": "b"}])
    )
    body, json_length = encode_response(
        InferResponse("m", "1", {"a": np.ones(2, np.float32), "b": np.array([[1, 2]], dtype=np.int64)}),
        request,
    )
    assert json_length is None
    document = orjson.loads(body)
    assert [o["name"] for o in document["outputs"]] == ["b"]
    assert document["outputs"][0] == {"name": "b", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]}


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', None, "needs a 'name'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}',
            None,
            "unknown datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            None,
            "non-negative",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
            None,
            "needs 3 elements",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": ["a"]}]}',
            None,
            "not all INT32",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}]}',
            None,
            "must be integers",
        ),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}',
            None,
            "runs past",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            999,
            "outside the body",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_request(body, header_length)


def test_binary_size_must_match_shape_and_no_bytes_left_over() -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}
    )
    with pytest.raises(InvalidInput, match="needs 8 bytes"):
        decode_request(header + b"\0" * 4, len(header))
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}
    )
    with pytest.raises(InvalidInput, match="unused"):
        decode_request(header + b"\0" * 6, len(header))


def test_truncated_bytes_element_is_rejected() -> None:
    raw = b"\x05\x00\x00\x00ab"
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    )
    with pytest.raises(InvalidInput, match="runs past the end"):
        decode_request(header + raw, len(header))


def test_client_timeout_parameter_is_microseconds() -> None:
    request = decode_request(
        _json_body(
            [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], parameters={"timeout": 250_000}
        )
    )
    assert request.timeout_s() == pytest.approx(0.25)


def _one(inputs: dict[str, object], limits: DecodeLimits | None = None) -> None:
    decode_request(_json_body([inputs]), None, limits or DecodeLimits())


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        # bytes(300000000) once allocated 300 MB from an 80-byte request
        (
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": [300000000]},
            "must be strings, found an integer",
        ),
        ({"name": "t", "shape": [2], "datatype": "BYTES", "data": [["a"], "b"]}, "input 't'"),
        ({"name": "t", "shape": [2], "datatype": "INT32", "data": [[1], 2]}, "input 't'"),
        ({"name": "t", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3]]}, "does not match shape"),
        ({"name": "t", "shape": [2, 1], "datatype": "INT32", "data": [[1], 2]}, "does not match shape"),
        ({"name": "t", "shape": [1], "datatype": "INT32", "data": [True]}, "found true/false"),
        ({"name": "t", "shape": [1], "datatype": "BOOL", "data": [1]}, "found an integer"),
        ({"name": "t", "shape": [1], "datatype": "UINT8", "data": [256]}, "out of the range of UINT8"),
        ({"name": "t", "shape": [1], "datatype": "INT8", "data": [-129]}, "out of the range of INT8"),
        ({"name": "t", "shape": [1], "datatype": "FP16", "data": [1e10]}, "out of the range of FP16"),
        ({"name": "t", "shape": [1], "datatype": "FP32", "data": ["1"]}, "found a string"),
        ({"name": "t", "shape": [1], "datatype": "FP32", "data": [None]}, "found null"),
        (
            {"name": "t", "shape": [1, 0, 9223372036854775807], "datatype": "BYTES", "data": []},
            "server.max_tensor_bytes",
        ),
        ({"name": "t", "shape": [1] * 33, "datatype": "FP32", "data": [1]}, "33 dimensions"),
        (
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"], "parameters": []},
            "must be an object",
        ),
        (
            {
                "name": "t",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["a"],
                "parameters": {"content_type": "pd"},
            },
            "content_type",
        ),
        (
            {
                "name": "t",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["!!"],
                "parameters": {"content_type": "base64"},
            },
            "base64",
        ),
        (
            {
                "name": "t",
                "shape": [1],
                "datatype": "FP32",
                "data": [1],
                "parameters": {"binary_data_size": True},
            },
            "non-negative",
        ),
        ({"name": 7, "shape": [1], "datatype": "FP32", "data": [1]}, "needs a 'name'"),
        ({"name": "t", "shape": [1], "datatype": ["FP32"], "data": [1]}, "unknown datatype"),
    ],
)
def test_json_types_and_nesting_must_match_the_datatype_and_shape(
    tensor: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _one(tensor)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "y", "parameters": [1]}],
            },
            "output 'y': 'parameters' must be an object",
        ),
        (
            {
                "inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
            },
            "binary_data must be true or false",
        ),
        (
            {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [7]},
            r"outputs\[0\] needs a 'name'",
        ),
        (
            {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": [1]},
            "must be an object",
        ),
        (
            {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 5},
            "'id' must be a string",
        ),
        ({"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}, "given twice"),
    ],
)
def test_request_level_fields_have_their_wire_types(document: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_request(orjson.dumps(document))


def test_base64_bytes_are_decoded_when_the_input_says_so() -> None:
    request = decode_request(
        _json_body(
            [
                {
                    "name": "t",
                    "shape": [2],
                    "datatype": "BYTES",
                    "data": ["/wA=", ""],
                    "parameters": {"content_type": "base64"},
                }
            ]
        )
    )
    assert list(request.inputs[0].data) == [b"\xff\x00", b""]


def test_element_and_request_byte_limits_name_their_settings() -> None:
    limits = DecodeLimits(max_element_bytes=8, max_tensor_bytes=2048)
    with pytest.raises(PayloadTooLarge, match=r"9 bytes .* limit of 8 bytes \(server.max_element_bytes\)"):
        _one({"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x" * 9]}, limits)
    with pytest.raises(PayloadTooLarge, match=r"server\.max_element_bytes"):
        _one(
            {
                "name": "t",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["eA" * 8],
                "parameters": {"content_type": "base64"},
            },
            limits,
        )
    raw = serialize_byte_tensor(np.array([b"x" * 9], dtype=object)).item()
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    )
    with pytest.raises(PayloadTooLarge, match=r"server\.max_element_bytes"):
        decode_request(header + raw, len(header), limits)
    # 600 FP32 values = 2400 bytes: refused from the shape, before numpy converts anything
    with pytest.raises(
        PayloadTooLarge, match=r"2400 bytes decoded, over the limit of 2048 bytes \(server.max_tensor_bytes\)"
    ):
        _one({"name": "t", "shape": [600], "datatype": "FP32", "data": [0.5] * 600}, limits)
    # the budget is for the whole request: two inputs that fit alone do not fit together
    two = [{"name": f"t{i}", "shape": [300], "datatype": "FP32", "data": [0.5] * 300} for i in range(2)]
    with pytest.raises(PayloadTooLarge, match=r"server\.max_tensor_bytes"):
        decode_request(_json_body(two), None, limits)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "t", "shape": [1000], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}
            ]
        }
    )
    with pytest.raises(InvalidInput, match="more than 8 bytes of binary data can hold"):
        decode_request(header + b"\0" * 8, len(header), limits)


def test_nested_data_matching_the_shape_is_accepted() -> None:
    request = decode_request(
        _json_body([{"name": "t", "shape": [2, 1, 2], "datatype": "INT8", "data": [[[1, 2]], [[3, -4]]]}])
    )
    np.testing.assert_array_equal(request.inputs[0].data, [[[1, 2]], [[3, -4]]])
    assert request.inputs[0].data.dtype == np.int8


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.just("t") | json_values,
        "datatype": st.sampled_from(["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "BYTES"])
        | json_values,
        "shape": st.lists(st.integers(0, 3) | st.just(2**63 - 1), max_size=3) | json_values,
        "data": st.lists(json_values, max_size=4) | json_values,
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "binary_data_size": st.integers(0, 24) | json_values,
                "content_type": st.just("base64") | json_values,
            },
        )
        | json_values,
    },
)


@settings(max_examples=1500, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "inputs": st.lists(tensors, max_size=3) | json_values,
            "outputs": st.lists(
                st.fixed_dictionaries({}, optional={"name": json_values, "parameters": json_values}),
                max_size=2,
            )
            | json_values,
            "parameters": json_values,
            "id": json_values,
        },
    ),
    st.binary(max_size=24),
    st.booleans(),
)
def test_arbitrary_json_is_decoded_or_refused_with_invalid_input(
    document: dict[str, object], tail: bytes, binary: bool
) -> None:
    header = orjson.dumps(document)
    try:
        request = decode_request(
            header + tail if binary else header, len(header) if binary else None, DecodeLimits(16, 1024)
        )
    except InvalidInput:
        return
    for tensor in request.inputs:
        assert tensor.data.shape == tensor.shape


def test_a_string_too_long_for_any_element_is_refused_before_the_body_is_parsed() -> None:
    limits = DecodeLimits(max_element_bytes=50_000)
    # Cut off after the string: a parse would answer "not valid JSON"; the scan refuses it first.
    truncated = b'{"inputs":[{"name":"t","shape":[1],"datatype":"BYTES","data":["' + b"lorem " * 20_000 + b'"'
    with pytest.raises(PayloadTooLarge, match=r"at least \d+ bytes decoded, over the limit of 50000 bytes"):
        decode_request(truncated, None, limits)
    # Long runs that are not one long element pass the scan: numbers between strings, and escapes
    # (120 KB of \u00e9 escapes decode to 40 KB).
    numbers = [{"name": "t", "shape": [12_000], "datatype": "FP32", "data": [0.125] * 12_000}]
    assert decode_request(_json_body(numbers), None, limits).inputs[0].data.shape == (12_000,)
    escaped = _json_body([{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x"]}]).replace(
        b'"x"', b'"' + b"\\u00e9" * 20_000 + b'"'
    )
    assert decode_request(escaped, None, limits).inputs[0].data[0] == "\u00e9".encode() * 20_000
    # Digits alone could lie outside a string, so the scan leaves them to the exact check.
    with pytest.raises(PayloadTooLarge, match=r"input 't': a BYTES element of 90000 bytes"):
        _one({"name": "t", "shape": [1], "datatype": "BYTES", "data": ["7" * 90_000]}, limits)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 2_000)), min_size=1, max_size=3))
def test_the_long_string_scan_never_refuses_elements_within_the_limit(pieces: list[tuple[str, int]]) -> None:
    # Texts of 70,000 characters and more, past the scan's floor (hypothesis leaves out lone surrogates):
    # quotes, backslashes and control characters come escaped, others as UTF-8 of 1-4 bytes; the limit
    # is the longest one, so each must pass.
    texts = [piece * (70_000 // len(piece) + extra) for piece, extra in pieces]
    limits = DecodeLimits(max_element_bytes=max(len(text.encode()) for text in texts))
    body = _json_body([{"name": "t", "shape": [len(texts)], "datatype": "BYTES", "data": texts}])
    decoded = decode_request(body, None, limits).inputs[0].data
    assert [item.decode() for item in decoded] == texts
