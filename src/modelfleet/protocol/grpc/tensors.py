"""Between Triton's gRPC infer messages and the codec's InferRequest / InferResponse.

tritonclient.grpc sends every input as `raw_input_contents` (one bytes field per input, in input order;
BYTES elements as 4-byte little-endian length prefixes) and reads `raw_output_contents` the same way;
the typed `contents` fields (what other clients may send) are accepted too. The checks and the
`server.max_tensor_bytes` budget are the codec's, so REST and gRPC refuse the same requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelfleet.errors import InvalidInput
from modelfleet.protocol.codec import (
    DEFAULT_LIMITS,
    DecodeLimits,
    InferRequest,
    InferResponse,
    InputTensor,
    RequestedOutput,
    TensorDecoder,
    encode_bytes_elements,
)
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.types import Datatype

# The typed `contents` field that carries each datatype (FP16 has none: raw bytes only).
_CONTENTS_FIELD = {
    Datatype.BOOL: "bool_contents",
    Datatype.INT8: "int_contents",
    Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents",
    Datatype.INT64: "int64_contents",
    Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents",
    Datatype.UINT32: "uint_contents",
    Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents",
    Datatype.FP64: "fp64_contents",
    Datatype.BYTES: "bytes_contents",
}


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The Python value of an InferParameter (bool, int, str or float); None when unset."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def parameters_dict(parameters: Any) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def decode_infer_request(
    message: pb.ModelInferRequest, limits: DecodeLimits = DEFAULT_LIMITS
) -> InferRequest:
    """An InferRequest from a ModelInferRequest; raises InvalidInput (400) / PayloadTooLarge (413)."""
    if not message.inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw_contents)} entries for {len(message.inputs)} inputs: "
            "give one per input, in input order, or none"
        )
    decoder = TensorDecoder(limits)
    inputs: list[InputTensor] = []
    for position, tensor in enumerate(message.inputs):
        datatype, shape = decoder.header(position, tensor.name, tensor.datatype, list(tensor.shape))
        if raw_contents:
            inputs.append(decoder.raw(tensor.name, datatype, shape, memoryview(raw_contents[position])))
            continue
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise InvalidInput(
                f"input '{tensor.name}': {datatype.value} data must come in raw_input_contents"
            )
        inputs.append(decoder.typed(tensor.name, datatype, shape, getattr(tensor.contents, field)))
    outputs = None
    if message.outputs:
        outputs = [RequestedOutput(output.name, binary=True) for output in message.outputs]
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=parameters_dict(message.parameters),
        outputs=outputs,
        binary_outputs=True,
    )


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """A ModelInferResponse whose tensors travel in `raw_output_contents`, as tritonclient reads them."""
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version)
    if response.id is not None:
        message.id = response.id
    for name, array in response.outputs.items():
        datatype = Datatype.from_numpy(array.dtype)
        message.outputs.add(name=name, datatype=datatype.value, shape=array.shape)
        message.raw_output_contents.append(
            encode_bytes_elements(array)
            if datatype is Datatype.BYTES
            else np.ascontiguousarray(array).tobytes()
        )
    return message
