"""The router's gRPC front, its pure parts: the model name read from the wire, and status mapping."""

from __future__ import annotations

import grpc
import pytest

from modelfleet.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from modelfleet.fleet.router_grpc import model_name
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc.status import error_metadata, grpc_status, http_status


@pytest.mark.parametrize("name", ["iris", "", "m" * 300, "caf\u00e9"])
def test_model_name_from_the_wire_matches_a_full_parse(name: str) -> None:
    request = pb.ModelInferRequest(model_name=name, id="x")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * 16)
    assert model_name(request.SerializeToString(), pb.ModelInferRequest) == name
    assert (
        model_name(pb.ModelReadyRequest(name=name, version="1").SerializeToString(), pb.ModelReadyRequest)
        == name
    )


def test_model_name_when_field_one_is_not_first() -> None:
    # Parsers must accept fields in any order; ours reads field 1 directly only when it comes first.
    tail = pb.ModelInferRequest(id="x").SerializeToString()
    head = pb.ModelInferRequest(model_name="iris").SerializeToString()
    assert model_name(tail + head, pb.ModelInferRequest) == "iris"
    with pytest.raises(InvalidInput, match="not a valid protobuf message"):
        model_name(b"\x0a\xff", pb.ModelInferRequest)


def test_status_mapping_and_retry_metadata() -> None:
    assert grpc_status(NotFound("x")) is grpc.StatusCode.NOT_FOUND
    assert grpc_status(PayloadTooLarge("x")) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_status(InvalidInput("x")) is grpc.StatusCode.INVALID_ARGUMENT
    assert http_status(grpc.StatusCode.UNAVAILABLE) == 503 and http_status(grpc.StatusCode.OK) == 200
    assert http_status(grpc.StatusCode.DATA_LOSS) == 500
    assert error_metadata(Unavailable("busy", retry_after_s=0.0123)) == (
        ("retry-after", "1"),
        ("retry-after-ms", "13"),
    )
    assert error_metadata(NotFound("x")) == ()
