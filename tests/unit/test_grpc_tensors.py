"""Converting gRPC infer messages: raw and typed contents under the codec's limits, and raw outputs."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.errors import InvalidInput, PayloadTooLarge
from modelfleet.protocol.codec import DecodeLimits, InferResponse, encode_bytes_elements
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc.tensors import decode_infer_request, encode_infer_response


def _request(*, raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="x")
    request.parameters["timeout"].int64_param = 5_000_000
    request.inputs.add(name="a", datatype="FP32", shape=[2, 2])
    if raw is not None:
        request.raw_input_contents.extend(raw)
    return request


def test_raw_contents_and_parameters() -> None:
    values = np.arange(4, dtype=np.float32)
    decoded = decode_infer_request(_request(raw=[values.tobytes()]))
    np.testing.assert_array_equal(decoded.inputs[0].data, values.reshape(2, 2))
    assert decoded.id == "x" and decoded.timeout_s() == 5.0 and decoded.outputs is None


def test_typed_contents_and_bytes() -> None:
    request = _request()
    request.inputs[0].contents.fp32_contents.extend([1, 2, 3, 4])
    request.inputs.add(name="t", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"x", b"yz"])
    decoded = decode_infer_request(request)
    assert decoded.inputs[0].data.dtype == np.float32 and list(decoded.inputs[1].data) == [b"x", b"yz"]


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        ([b"\0" * 12], InvalidInput, "needs 16 bytes, got 12"),
        ([b"\0" * 16, b""], InvalidInput, "raw_input_contents holds 2 entries for 1 inputs"),
    ],
)
def test_raw_contents_are_checked(raw: list[bytes], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        decode_infer_request(_request(raw=raw))


def test_typed_contents_count_and_budget() -> None:
    request = _request()
    request.inputs[0].contents.fp32_contents.extend([1, 2, 3])
    with pytest.raises(InvalidInput, match="needs 4 elements, contents hold 3"):
        decode_infer_request(request)
    request.inputs[0].contents.fp32_contents.append(4)
    with pytest.raises(PayloadTooLarge, match=r"server\.max_tensor_bytes"):
        decode_infer_request(request, DecodeLimits(max_tensor_bytes=8))


def test_out_of_range_int_contents_are_refused() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="i", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(InvalidInput, match="out of the range of INT8"):
        decode_infer_request(request)


def test_outputs_travel_raw_with_length_prefixed_bytes() -> None:
    outputs = {"p": np.ones((2, 3), np.float32), "label": np.array([b"a", b"bc"], dtype=object)}
    message = encode_infer_response(InferResponse("m", "1", outputs, "id-1"))
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("p", "FP32", [2, 3]),
        ("label", "BYTES", [2]),
    ]
    assert message.raw_output_contents[0] == outputs["p"].tobytes()
    assert message.raw_output_contents[1] == encode_bytes_elements(outputs["label"])
    assert message.id == "id-1"
