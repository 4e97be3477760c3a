"""JSON shapes of the V2 REST API, quoted from the Open Inference Protocol specification.

These are TypedDicts, not pydantic models: the hot path builds and reads them as plain dicts and
lets orjson do the work. They exist so the code says which spec object it is building.
"""

from __future__ import annotations

import enum
from typing import Any, NotRequired, TypedDict


class ModelState(enum.StrEnum):
    """A model version's state in the repository extension's index (`state` of RepositoryIndexEntry)."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


class MetadataTensor(TypedDict):
    """$metadata_model_tensor = { "name": $string, "datatype": $string, "shape": [ $number, ... ] }"""

    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(TypedDict):
    """$metadata_server_response = { "name": $string, "version": $string, "extensions": [ $string, ... ] }"""

    name: str
    version: str
    extensions: list[str]


class ModelMetadata(TypedDict):
    """$metadata_model_response = { "name", "versions"?, "platform", "inputs", "outputs", "parameters"? }"""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: NotRequired[dict[str, Any]]


class RepositoryIndexEntry(TypedDict):
    """Repository extension: { "name", "version", "state", "reason" }"""

    name: str
    version: str
    state: ModelState
    reason: str


class ErrorResponse(TypedDict):
    """$inference_error_response = { "error": <error message string> }, plus modelfleet's
    `retry_after_s` on a 503: the precise wait the Retry-After header rounds up to whole seconds."""

    error: str
    retry_after_s: NotRequired[float]


class RequestInput(TypedDict):
    """$request_input = { "name", "shape", "datatype", "parameters"?, "data"? }; codec.decode_request
    checks each field's JSON type (and `data`'s against the datatype) before using it."""

    name: str
    shape: list[int]
    datatype: str
    parameters: NotRequired[dict[str, Any]]
    data: NotRequired[list[Any]]


class RequestOutput(TypedDict):
    """$request_output = { "name", "parameters"? }"""

    name: str
    parameters: NotRequired[dict[str, Any]]


class InferenceRequest(TypedDict):
    """$inference_request = { "id"?, "parameters"?, "inputs", "outputs"? }"""

    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    inputs: list[RequestInput]
    outputs: NotRequired[list[RequestOutput]]
