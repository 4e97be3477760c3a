"""The OpenAPI 3.1 document of the V2 REST routes this server answers, built from the models it serves.

The shapes quote the Open Inference Protocol's REST specification ($inference_request,
$inference_response, $metadata_server_response, $metadata_model_response, $inference_error_response)
and the repository extension. Besides the templated ``/v2/models/{model_name}/...`` paths, every served
model gets concrete paths whose request body names its own inputs, datatypes and ranks: a client
generator (or a fuzzer such as schemathesis) then builds requests that reach the model, not only ones
refused at the door. Every error a route can answer is listed with the ``{"error": ...}`` body the
server sends, so a response outside the document is a bug the fuzz suite catches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelfleet import __version__
from modelfleet.types import Datatype, TensorSpec

_JSON = "application/json"
_REF = "#/components/schemas/"

# What each status means here; the server answers these with {"error": ...}.
_ERRORS = {
    "400": "Bad request: malformed body, wrong input name, datatype or shape, or a limit exceeded (the message names the limit and its setting).",
    "401": "Missing or invalid API key (auth on).",
    "403": "The key lacks the scope this route needs.",
    "404": "No such model, version or route.",
    "413": "Body (or decompressed body, or decoded tensors) over the server's limit.",
    "503": "Not ready, loading, draining or overloaded; see Retry-After.",
    "504": "The request's deadline passed before a result was ready.",
}
_COMMON = ("400", "401", "403", "404", "413", "503")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _responses(ok: dict[str, Any], errors: Iterable[str] = _COMMON) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in errors:
        responses[status] = {"$ref": f"#/components/responses/E{status}"}
    return responses


def _data_schema(datatype: Datatype | None) -> dict[str, Any]:
    """`data`: a flat or nested (row-major) list of values of the tensor's datatype."""
    if datatype is None:
        scalar: dict[str, Any] = {"type": ["string", "number", "boolean"]}
    elif datatype is Datatype.BYTES:
        scalar = {"type": "string"}
    elif datatype is Datatype.BOOL:
        scalar = {"type": "boolean"}
    elif datatype.value.startswith(("INT", "UINT")):
        scalar = {"type": "integer"}
    else:
        scalar = {"type": "number"}
    return {"type": "array", "items": {"anyOf": [scalar, {"type": "array"}]}}


def _input_schema(spec: TensorSpec | None) -> dict[str, Any]:
    """$request_input; with a spec, the one input of a served model it describes."""
    shape: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    if spec is None:
        name: dict[str, Any] = {"type": "string", "minLength": 1}
        datatype: dict[str, Any] = {"type": "string", "enum": [d.value for d in Datatype]}
    else:
        name = {"const": spec.name}
        datatype = {"const": spec.datatype.value}
        shape |= {"minItems": len(spec.shape), "maxItems": len(spec.shape)}
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": name,
            "shape": shape,
            "datatype": datatype,
            "parameters": _ref("Parameters"),
            "data": _data_schema(spec.datatype if spec is not None else None),
        },
    }


def _request_schema(inputs: list[TensorSpec] | None) -> dict[str, Any]:
    """$inference_request; with specs, a request for one served model."""
    if inputs:
        items: dict[str, Any] = {"anyOf": [_input_schema(spec) for spec in inputs]}
        required = sum(1 for spec in inputs if not spec.optional)
        bounds = {"minItems": required, "maxItems": len(inputs)}
    else:
        items, bounds = _input_schema(None), {"minItems": 1}
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ref("Parameters"),
            "inputs": {"type": "array", "items": items, **bounds},
            "outputs": {"type": "array", "items": _ref("RequestedOutput")},
        },
    }


def _schemas() -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": _ref("Parameters"),
            "data": {"type": "array"},
        },
    }
    metadata_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "Parameters": {"type": "object", "description": "$parameters: free-form, per the extensions used."},
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
            "description": "$inference_error_response",
        },
        "RequestedOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": _ref("Parameters")},
        },
        "InferenceRequest": _request_schema(None),
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": _ref("Parameters"),
                "outputs": {"type": "array", "items": tensor},
            },
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": metadata_tensor},
                "outputs": {"type": "array", "items": metadata_tensor},
                "parameters": _ref("Parameters"),
            },
        },
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "state"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "state": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    }


def _model_operations(prefix: str, params: list[dict[str, Any]], request: dict[str, Any]) -> dict[str, Any]:
    """The metadata, ready and infer paths under one model prefix (templated or concrete)."""
    ready_errors = ("400", "401", "403", "404")
    return {
        prefix: {
            "get": {
                "summary": "Model metadata",
                "parameters": params,
                "responses": _responses(_json_body(_ref("ModelMetadata"), "The model's metadata.")),
            }
        },
        f"{prefix}/ready": {
            "get": {
                "summary": "Model readiness",
                "parameters": params,
                "responses": {
                    **_responses(_json_body(_ref("ModelReady"), "The model is ready."), ready_errors),
                    "503": _json_body(_ref("ModelReady"), "The model is not ready."),
                },
            }
        },
        f"{prefix}/infer": {
            "post": {
                "summary": "Inference",
                "parameters": [
                    *params,
                    {
                        "name": "X-Request-Timeout-Ms",
                        "in": "header",
                        "required": False,
                        "description": "The client's deadline for this request, in milliseconds.",
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {"required": True, "content": {_JSON: {"schema": request}}},
                "responses": _responses(
                    _json_body(_ref("InferenceResponse"), "The outputs."), (*_COMMON, "504")
                ),
            }
        },
    }


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def openapi_document(models: Iterable[tuple[str, list[TensorSpec]]]) -> dict[str, Any]:
    """The document for a server serving `models` (served name, input specs)."""
    model_name = [_path_param("model_name")]
    versioned = [*model_name, _path_param("model_version")]
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {"summary": "Liveness", "responses": {"200": _json_body(_ref("Live"), "Alive.")}}
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness: every model loaded",
                "responses": {
                    "200": _json_body(_ref("Ready"), "Ready."),
                    "503": _json_body(_ref("Ready"), "Not ready."),
                },
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": _responses(
                    _json_body(_ref("ServerMetadata"), "Server metadata."), ("401", "403")
                ),
            }
        },
        "/v2/repository/index": {
            "post": {
                "summary": "Repository index (model_repository extension)",
                "responses": _responses(
                    _json_body(_ref("RepositoryIndex"), "Every model and its state."),
                    ("400", "401", "403", "413"),
                ),
            }
        },
        **{
            f"/v2/repository/models/{{model_name}}/{action}": {
                "post": {
                    "summary": f"{action.capitalize()} a model (model_repository extension; admin scope)",
                    "parameters": model_name,
                    "requestBody": {
                        "required": False,
                        "content": {
                            _JSON: {
                                "schema": {"type": "object", "properties": {"parameters": _ref("Parameters")}}
                            }
                        },
                    },
                    "responses": _responses(_json_body({"type": "object"}, f"{action.capitalize()}ed.")),
                }
            }
            for action in ("load", "unload")
        },
        **_model_operations("/v2/models/{model_name}", model_name, _ref("InferenceRequest")),
        **_model_operations(
            "/v2/models/{model_name}/versions/{model_version}", versioned, _ref("InferenceRequest")
        ),
    }
    for name, inputs in models:
        paths |= _model_operations(f"/v2/models/{name}", [], _request_schema(inputs))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelfleet V2 inference API",
            "version": __version__,
            "description": "Open Inference Protocol (V2) REST routes with the binary tensor, "
            "model_repository, statistics, health and metadata extensions.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": {
                f"E{status}": _json_body(_ref("Error"), description)
                for status, description in _ERRORS.items()
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
