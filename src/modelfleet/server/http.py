"""Thin V2 HTTP routes as a raw ASGI app.

No web framework sits on the hot path: the route is found by splitting the path, the body is read
once, and `dataplane` does the work. Every error becomes `{"error": "..."}` with the status from the
error tree; nothing else (no traceback) reaches a client.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson

from modelfleet.config.observe import UiConfig
from modelfleet.errors import (
    InvalidInput,
    ModelfleetError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from modelfleet.observe.timing import InferTiming
from modelfleet.observe.tracing import Tracer
from modelfleet.observe.ui import ParsedFigures, refused_page, ui_answer, ui_credentials
from modelfleet.observe.ui_data import server_document
from modelfleet.protocol.codec import (
    DEFAULT_LIMITS,
    HEADER_CONTENT_LENGTH,
    DecodeLimits,
    decode_request,
    encode_response,
)
from modelfleet.protocol.wire import ErrorResponse
from modelfleet.security.auth import (
    WWW_AUTHENTICATE,
    Authorizer,
    authorize_off_loop,
    credentials_from_headers,
)
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http_limits import CONNECTION_STATE, ConnectionState
from modelfleet.server.metrics import CONTENT_TYPE, ServerMetrics, outcome_for_status

log = logging.getLogger("modelfleet.server")

# The ASGI connection scope (type, path, headers, ...); an API key's scope is security.scopes.Scope.
AsgiScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_GZIP_MIN_BYTES = 1024
_ONE_BUFFER_BYTES = 64 * 1024
_CHALLENGE = WWW_AUTHENTICATE.encode()
HEADER_REQUEST_TIMEOUT = b"x-request-timeout-ms"


# (action "load"/"unload", model name, request body, caller's key id or None, client address or None)
# → response document
AdminHandler = Callable[[str, str, bytes, str | None, str | None], Awaitable[Any]]


class LifecycleHooks(Protocol):
    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...


def client_address(scope: AsgiScope) -> str | None:
    """``host:port`` of the peer (ASGI ``scope["client"]``), for audit records."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _header(scope: AsgiScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class V2App:
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: ServerMetrics,
        *,
        max_body_bytes: int,
        lifecycle: LifecycleHooks,
        authorizer: Authorizer | None = None,
        protect_metrics: bool = True,
        admin: AdminHandler | None = None,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
        ui: UiConfig | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.decode_limits = decode_limits
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.lifecycle = lifecycle
        self.authorizer = authorizer
        self.protect_metrics = protect_metrics
        self.admin = admin
        self.ui = ui
        self._ui_figures = ParsedFigures(metrics.render)
        self.tracer = tracer

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.lifecycle.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.lifecycle.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        parts = path.strip("/").split("/")
        model_name = ""
        try:
            if parts[0] == "v2":
                if len(parts) >= 3 and parts[1] == "models":
                    model_name = parts[2]
                    await self._model_route(scope, receive, send, method, parts)
                    return
                await self._server_route(scope, receive, send, method, parts)
                return
            if parts == ["metrics"] and method == "GET":
                if self.protect_metrics:
                    await self._authorize(scope, "read")
                await _respond(
                    send, 200, await self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())]
                )
                return
            if parts[0] == "ui" and self.ui is not None and method == "GET":
                await self._ui(scope, send, path)
                return
            if parts == ["openapi.json"] and method == "GET":
                await self._authorize(scope, "read")
                await _json(send, 200, self.dataplane.openapi())
                return
            raise NotFound(f"no route {method} {path}; the API is under /v2 (Open Inference Protocol)")
        except ModelfleetError as exc:
            if isinstance(exc, Unavailable) and model_name and exc.retry_after_s:
                state: ConnectionState | None = scope.get(CONNECTION_STATE)
                if state is not None:
                    state.refused_until = time.monotonic() + exc.retry_after_s
            await self._error(send, exc, model_name)
        except asyncio.CancelledError:
            # Its client hung up while it waited (LimitedHttpToolsProtocol.connection_lost).
            lost: ConnectionState | None = scope.get(CONNECTION_STATE)
            if lost is not None and lost.lost:
                if model_name:
                    self.metrics.for_model(model_name).count("client_closed")
                return  # nobody to answer
            raise
        except Exception:  # a bug, not a client error: log it here, answer without internals
            log.exception("unhandled error on %s %s", method, path)
            await self._error(send, ModelfleetError("internal server error"), model_name)

    async def _error(self, send: Send, exc: ModelfleetError, model_name: str) -> None:
        headers = list(_JSON_HEADERS)
        document: ErrorResponse = {"error": exc.message}
        if isinstance(exc, Unavailable):
            # The header is whole seconds (RFC 9110); the body carries the precise figure for clients and
            # routers that can retry sooner (an overload backlog usually drains in milliseconds).
            headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after_s or 1))).encode()))
            if exc.retry_after_s is not None:
                document["retry_after_s"] = round(exc.retry_after_s, 4)
        elif isinstance(exc, Unauthorized):
            headers.append((b"www-authenticate", _CHALLENGE))
        if model_name:  # a name that is not served counts under `unknown`, never as a new label
            self.metrics.for_model(model_name).count(outcome_for_status(exc.http_status))
        await _respond(send, exc.http_status, orjson.dumps(document), headers)

    async def _authorize(self, scope: AsgiScope, needed: str) -> str | None:
        """The caller's key id, or None when auth is off. Raises Unauthorized (401) / Forbidden (403)."""
        if self.authorizer is None:
            return None
        credentials = credentials_from_headers(_header(scope, b"authorization"), _header(scope, b"x-api-key"))
        principal = await authorize_off_loop(self.authorizer, credentials, needed, client_address(scope))
        return principal.key_id

    async def _ui(self, scope: AsgiScope, send: Send, path: str) -> None:
        """The dashboard (observe/ui.py): the key from a header or the page's cookie, as /metrics checks it."""
        assert self.ui is not None
        if self.authorizer is not None:
            credentials = ui_credentials(
                _header(scope, b"authorization"), _header(scope, b"x-api-key"), _header(scope, b"cookie")
            )
            try:
                await authorize_off_loop(self.authorizer, credentials, "read", client_address(scope))
            except ModelfleetError as exc:
                if path.rstrip("/") != "/ui":
                    raise
                status, headers, body = refused_page(exc)
                await _respond(send, status, body, headers)
                return
        server = scope.get("server")
        name = f"{server[0]}:{server[1]}" if server else "modelfleet"
        refresh_s = self.ui.refresh_s

        async def data() -> dict[str, Any]:
            figures = await self._ui_figures.get()
            return server_document(name, self.dataplane.repository_index(), figures, refresh_s)

        status, headers, body = await ui_answer(path, data, self.ui.reports_dir)
        await _respond(send, status, body, headers)

    async def _server_route(
        self, scope: AsgiScope, receive: Receive, send: Send, method: str, parts: list[str]
    ) -> None:
        if parts == ["v2", "health", "live"]:
            await _json(send, 200, {"live": True})
        elif parts == ["v2", "health", "ready"]:
            ready = self.dataplane.ready()
            await _json(send, 200 if ready else 503, {"ready": ready})
        elif parts == ["v2"] and method == "GET":
            await self._authorize(scope, "read")
            await _json(send, 200, self.dataplane.server_metadata())
        elif parts == ["v2", "repository", "index"] and method in ("POST", "GET"):
            await self._authorize(scope, "read")
            await _read_body(scope, receive, self.max_body_bytes)
            await _json(send, 200, self.dataplane.repository_index())
        elif (
            len(parts) == 5 and parts[:3] == ["v2", "repository", "models"] and parts[4] in ("load", "unload")
        ):
            caller = await self._authorize(scope, "admin")
            if method != "POST":
                raise InvalidInput(f"use POST for /v2/repository/models/{{model}}/{parts[4]}")
            if self.admin is None:
                raise NotFound("the repository load/unload extension is not enabled on this server")
            body = bytes(await _read_body(scope, receive, self.max_body_bytes))  # small: a load or unload
            await _json(send, 200, await self.admin(parts[4], parts[3], body, caller, client_address(scope)))
        else:
            raise NotFound(f"no route {method} /{'/'.join(parts)}")

    async def _model_route(
        self, scope: AsgiScope, receive: Receive, send: Send, method: str, parts: list[str]
    ) -> None:
        # /v2/models/{m}[/versions/{v}][/ready|/infer]
        name = parts[2]
        version: str | None = None
        rest = parts[3:]
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "infer", "drift"):
            raise NotFound(f"no route {method} /{'/'.join(parts)}")
        if action == "infer":
            if method != "POST":
                raise InvalidInput("use POST for /infer")
            await self._authorize(scope, f"infer:{name}")
            if self.tracer is None:
                await self._infer(scope, receive, send, name, version)
            else:
                await self._traced_infer(scope, receive, send, name, version)
        elif action == "drift":
            # Auth like /metrics (the fleet's drift monitor reads it as it scrapes), but the window holds
            # served data, so with auth on it always needs the `read` scope.
            await self._authorize(scope, "read")
            if method != "GET":
                raise InvalidInput("use GET for /drift")
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            document = await self.dataplane.drift_document(
                name, version, self.metrics, "window=0" not in query, "reference=1" in query
            )
            await _json(send, 200, document)
        elif action == "ready":
            await self._authorize(scope, "read")
            ready = self.dataplane.model_ready(name, version)
            await _json(send, 200 if ready else 503, {"name": name, "ready": ready})
        else:
            await self._authorize(scope, "read")
            await _json(send, 200, self.dataplane.model_metadata(name, version))

    async def _traced_infer(
        self, scope: AsgiScope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        """`_infer` with its timestamps taken, then its spans recorded (observe/tracing.py)."""
        assert self.tracer is not None
        timing = InferTiming(time.monotonic())
        traceparent = _header(scope, b"traceparent")
        try:
            served_version = await self._infer(scope, receive, send, name, version, timing)
        except ModelfleetError as exc:
            self.tracer.inference(timing, traceparent, name, version, exc.http_status, exc.message)
            raise
        self.tracer.inference(timing, traceparent, name, served_version, 200)

    async def _infer(
        self,
        scope: AsgiScope,
        receive: Receive,
        send: Send,
        name: str,
        version: str | None,
        timing: InferTiming | None = None,
    ) -> str:
        started = time.perf_counter()
        body = await _read_body(scope, receive, self.max_body_bytes)
        header_length_text = _header(scope, HEADER_CONTENT_LENGTH.encode())
        header_length: int | None = None
        if header_length_text is not None:
            try:
                header_length = int(header_length_text) if len(header_length_text) <= 20 else -1
            except ValueError:
                raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
        timeout_text = _header(scope, HEADER_REQUEST_TIMEOUT)
        timeout_s = None if timeout_text is None else _request_timeout_s(timeout_text)
        request = decode_request(body, header_length, self.decode_limits)
        if timing is not None:
            timing.decoded = time.monotonic()
        state: ConnectionState | None = scope.get(CONNECTION_STATE)
        impatient = False
        if state is not None:
            # A connection that once resent before the retry-after of its 503 had run: a client that
            # resends at once (a closed loop) is queued, not refused again (Batcher.submit, `impatient`).
            if not state.impatient and time.monotonic() < state.refused_until:
                state.impatient = True
            impatient = state.impatient
            state.infer_task = asyncio.current_task()
        try:
            response = await self.dataplane.infer(name, version, request, timeout_s, timing, impatient)
        finally:
            if state is not None:
                state.infer_task = None
        if timing is not None:
            timing.answered = time.monotonic()
        payload, json_length = encode_response(response, request)
        headers = (
            [(b"content-type", b"application/octet-stream")]
            if json_length is not None
            else list(_JSON_HEADERS)
        )
        if json_length is not None:
            headers.append((b"inference-header-content-length", str(json_length).encode()))
        accept = _header(scope, b"accept-encoding")
        if accept is not None and len(payload) >= _GZIP_MIN_BYTES:
            if "gzip" in accept:
                payload = gzip.compress(payload, compresslevel=1)
                headers.append((b"content-encoding", b"gzip"))
            elif "deflate" in accept:
                payload = zlib.compress(payload, 1)
                headers.append((b"content-encoding", b"deflate"))
        if timing is not None:
            timing.encoded = time.monotonic()
        await _respond(send, 200, payload, headers)
        bound = self.metrics.for_model(response.model_name)
        bound.count("success")
        bound.observe_request_s(time.perf_counter() - started)
        return response.model_version


def _request_timeout_s(text: str) -> float:
    """The X-Request-Timeout-Ms header (a client's or the router's deadline) in seconds."""
    try:
        timeout_ms = float(text)
    except ValueError:
        timeout_ms = math.nan
    if not (math.isfinite(timeout_ms) and timeout_ms > 0):
        raise InvalidInput(
            f"header X-Request-Timeout-Ms must be a positive number of milliseconds, got {text[:32]!r}"
        )
    return timeout_ms / 1000


async def _read_body(scope: AsgiScope, receive: Receive, max_body_bytes: int) -> bytes | bytearray:
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {max_body_bytes}")
    chunks: list[bytes] = []
    # A large declared body is read into one buffer of its size: joining the chunks would hold it twice
    # (with the JSON parse on top, a 20 MB body peaked at three times its size).
    buffer = bytearray(int(declared)) if declared is not None and declared.isdigit() else None
    if buffer is not None and len(buffer) < _ONE_BUFFER_BYTES:
        buffer = None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            start, size = size, size + len(chunk)
            if size > max_body_bytes:
                raise PayloadTooLarge(f"request body is over the limit of {max_body_bytes} bytes")
            if buffer is None:
                chunks.append(chunk)
            elif size <= len(buffer):
                buffer[start:size] = chunk
            else:  # the HTTP parser ends a body at its Content-Length, so this is a parser bug
                raise InvalidInput(f"request body is longer than its Content-Length of {len(buffer)}")
        if not message.get("more_body", False):
            break
    body: bytes | bytearray
    if buffer is not None:
        body = buffer if size == len(buffer) else buffer[:size]
    else:
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = _header(scope, b"content-encoding")
    if encoding and encoding != "identity":
        body = _decompress(body, encoding, max_body_bytes)
    return body


def _decompress(body: bytes | bytearray, encoding: str, max_body_bytes: int) -> bytes:
    window_bits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if window_bits is None:
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip or deflate")
    decompressor = zlib.decompressobj(window_bits)
    try:
        # max_length stops a small compressed bomb from inflating past the body limit.
        data = decompressor.decompress(body, max_body_bytes + 1)
    except zlib.error:
        raise InvalidInput(f"request body is not valid {encoding} data") from None
    if len(data) > max_body_bytes or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body is over the limit of {max_body_bytes} bytes")
    return data


async def _json(send: Send, status: int, document: Any) -> None:
    await _respond(send, status, orjson.dumps(document), _JSON_HEADERS)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
