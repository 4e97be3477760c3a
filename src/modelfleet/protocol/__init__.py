"""Open Inference Protocol (V2): wire types and the tensor codec (JSON and binary extension). Pure."""

from modelfleet.protocol.codec import (
    HEADER_CONTENT_LENGTH,
    DecodeLimits,
    InferRequest,
    InferResponse,
    InputTensor,
    RequestedOutput,
    decode_request,
    encode_response,
)

__all__ = [
    "HEADER_CONTENT_LENGTH",
    "DecodeLimits",
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "RequestedOutput",
    "decode_request",
    "encode_response",
]
