"""The router's own answers (JSON bodies, refusals) and the client limits it serves under."""

from __future__ import annotations

from typing import Any

import orjson

from modelfleet.errors import ModelfleetError, Unauthorized
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.security.auth import WWW_AUTHENTICATE
from modelfleet.transport.server import ServerLimits
from modelfleet.transport.wire import Response

_JSON_HEADERS = [(b"Content-Type", b"application/json")]
_CHALLENGE = WWW_AUTHENTICATE.encode()


def json_response(status: int, data: Any, retry_after_s: int | None = None) -> Response:
    headers = list(_JSON_HEADERS)
    if retry_after_s is not None:
        headers.append((b"Retry-After", str(retry_after_s).encode()))
    return Response(status, headers, orjson.dumps(data))


def error_response(status: int, message: str, retry_after_s: int | None = None) -> Response:
    return json_response(status, {"error": message}, retry_after_s)


def refusal(exc: ModelfleetError) -> Response:
    """401 (with the challenge, as the servers send it), 403 or 400 for a request the auth check refused."""
    response = error_response(exc.http_status, exc.message)
    if isinstance(exc, Unauthorized):
        response.headers.append((b"WWW-Authenticate", _CHALLENGE))
    return response


def model_scope(path: str, model: str) -> str:
    """The scope a server would ask of this model route: ``infer:<model>`` for /infer, else ``read``."""
    return f"infer:{model}" if path.rstrip("/").endswith("/infer") else "read"


def server_limits(settings: RouterSettings) -> ServerLimits:
    """What one client may send the router, from its settings (refusals name them as ``router.NAME``)."""
    return ServerLimits(
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        max_body_bytes=settings.max_body_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_connections=settings.max_connections,
        max_pipelined=settings.max_pipelined_requests,
        retry_after_s=settings.retry_after_s,
    )
