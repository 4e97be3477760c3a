"""gRPC status codes for the error tree, and the trailing metadata that carries a retry hint.

An error's gRPC status is the one of its HTTP status (what KServe and Triton map them to), so REST and
gRPC clients see the same refusals; the router maps a status back for its metrics.
"""

from __future__ import annotations

import math

import grpc

from modelfleet.errors import ModelfleetError, Unavailable

# Trailing metadata of an UNAVAILABLE: Retry-After in whole seconds (as the HTTP header), and the precise
# figure in milliseconds (the body's retry_after_s over REST) that the router holds a replica for.
RETRY_AFTER = "retry-after"
RETRY_AFTER_MS = "retry-after-ms"

GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_HTTP_STATUS = {code: status for status, code in GRPC_STATUS.items()}
_HTTP_STATUS[grpc.StatusCode.OK] = 200


def grpc_status(exc: ModelfleetError) -> grpc.StatusCode:
    return GRPC_STATUS.get(exc.http_status, grpc.StatusCode.INTERNAL)


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a gRPC status stands for (500 for the codes without one), for metrics."""
    return _HTTP_STATUS.get(code, 500)


def retry_metadata(retry_after_s: float | None) -> tuple[tuple[str, str], ...]:
    retry_s = retry_after_s if retry_after_s is not None else 1.0
    return ((RETRY_AFTER, str(max(1, math.ceil(retry_s)))), (RETRY_AFTER_MS, str(math.ceil(retry_s * 1000))))


def error_metadata(exc: ModelfleetError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata for an error: the retry hint of an Unavailable, nothing for the others."""
    return retry_metadata(exc.retry_after_s) if isinstance(exc, Unavailable) else ()
