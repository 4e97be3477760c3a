"""The V2 codec against the spec and against tritonclient's own encoders (no sockets)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from modelfleet.errors import InvalidInput
from modelfleet.protocol import InferResponse, decode_request, encode_response


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
