"""`modelfleet bench --protocol grpc`: V2 gRPC targets (Triton's ModelInfer), prepared and sent.

Preparing reads each model's metadata over gRPC, builds the same request bodies as the REST targets
(`v2_bodies`) and serializes each as a ModelInferRequest with `raw_input_contents`, as tritonclient
sends them, once before any load. `GrpcPool` is the load generator's ConnectionPool interface
(submit / prewarm / close, at most `cap` calls in flight, the rest waiting in order) over one grpcio
aio channel: HTTP/2 multiplexes the calls on one connection, as a gRPC client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format

from modelfleet.bench.targets import PreparedEndpoint, PreparedTargets, model_targets, v2_bodies
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput, NotFound, Unavailable
from modelfleet.protocol.codec import decode_request, encode_bytes_elements
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc import grpc_service_pb2_grpc as pb_grpc
from modelfleet.protocol.grpc.status import RETRY_AFTER_MS, http_status
from modelfleet.transport.client import CONNECTION_ERROR, QUEUED_AT_CAP, SENT, TIMEOUT, OnDone, Origin
from modelfleet.transport.wire import Response
from modelfleet.types import Datatype

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_now = time.monotonic  # the load generator's clock (intended send times are on it)
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def grpc_origin(target: str, verify_tls: bool = True) -> Origin:
    """`grpc://HOST:PORT` (plaintext) or `grpcs://HOST:PORT` (TLS) as an Origin."""
    parts = urlsplit(target)
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname:
        raise InvalidInput(f"gRPC target {target!r} is not grpc://HOST:PORT or grpcs://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise InvalidInput(f"gRPC target {target!r} needs a port (a server's server.grpc_port)")
    return Origin(parts.hostname, port, parts.scheme == "grpcs", verify_tls)


def _channel(origin: Origin) -> grpc.aio.Channel:
    address = f"{origin.host}:{origin.port}"
    if not origin.tls:
        return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS)


def infer_message(name: str, version: str | None, body: bytes) -> bytes:
    """A REST infer body (JSON tensors) as a serialized ModelInferRequest with raw_input_contents."""
    request = decode_request(body)
    message = pb.ModelInferRequest(model_name=name, model_version=version or "")
    for tensor in request.inputs:
        message.inputs.add(name=tensor.name, datatype=tensor.datatype.value, shape=tensor.shape)
        raw = (
            encode_bytes_elements(tensor.data) if tensor.datatype is Datatype.BYTES else tensor.data.tobytes()
        )
        message.raw_input_contents.append(raw)
    return bytes(message.SerializeToString())


async def _metadata(
    stub: pb_grpc.GRPCInferenceServiceStub,
    name: str,
    version: str | None,
    metadata: Sequence[tuple[str, str]],
    target: str,
) -> dict[str, Any]:
    try:
        reply = await stub.ModelMetadata(
            pb.ModelMetadataRequest(name=name, version=version or ""), metadata=metadata, timeout=30
        )
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:
            raise NotFound(f"model {name!r} is not on the gRPC server at {target}") from None
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise Unavailable(f"cannot reach {target}: {error.details()}") from None
        raise InvalidInput(
            f"ModelMetadata({name!r}) at {target} answered {error.code().name}: {error.details()}"
        ) from None
    document: dict[str, Any] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    for tensor in document.get("inputs", []):  # int64 shapes come back as strings in JSON mapping
        tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return document


async def prepare_grpc(spec: BenchSpec, samples: Sequence[str]) -> PreparedTargets:
    """Targets of `spec` (target `grpc://HOST:PORT`), their metadata over gRPC, and encoded requests."""
    if spec.target is None:
        raise InvalidInput("--protocol grpc needs --target grpc://HOST:PORT (the server's server.grpc_port)")
    origin = grpc_origin(spec.target, spec.verify_tls)
    targets = model_targets(spec.model_copy(update={"serve_spec": None}))
    metadata = [(key.lower(), value) for key, value in spec.headers.items()]
    channel = _channel(origin)
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        documents = await asyncio.gather(
            *(_metadata(stub, t.name, t.version, metadata, spec.target) for t in targets)
        )
    finally:
        await channel.close()
    endpoints, models = [], []
    for number, (target, meta) in enumerate(zip(targets, documents, strict=True)):
        bodies = v2_bodies(meta, samples, spec.seed + number, target.name)
        requests = tuple(infer_message(target.name, target.version, body) for body in bodies)
        label = target.name if target.version is None else f"{target.name}:{target.version}"
        endpoints.append(
            PreparedEndpoint(label, origin, requests, target.weight, grpc_metadata=tuple(metadata))
        )
        models.append(
            {
                "name": target.name,
                "versions": list(meta.get("versions", [])),
                "platform": meta.get("platform"),
                "weight": target.weight,
            }
        )
    return PreparedTargets(label=spec.target, endpoints=endpoints, models=models)


class GrpcPool:
    """The load generator's pool interface over one gRPC channel: at most ``cap`` calls in flight."""

    def __init__(
        self,
        origin: Origin,
        cap: int,
        on_done: OnDone,
        connect_timeout_s: float,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.origin = origin
        self.cap = cap
        self.on_done = on_done
        self.connect_timeout_s = connect_timeout_s
        self.metadata = tuple(metadata)
        self._channel: grpc.aio.Channel | None = None
        self._infer: Any = None
        self._pending: deque[tuple[bytes, Any, float]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the generator's, set by the first call

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _ensure_channel(self) -> None:
        if self._channel is None:
            self._loop = asyncio.get_running_loop()
            self._channel = _channel(self.origin)
            self._infer = self._channel.unary_unary(INFER_METHOD)

    def submit(self, request: bytes, token: Any, deadline: float) -> int:
        self._ensure_channel()
        if self._in_flight >= self.cap:
            self._pending.append((request, token, deadline))
            return QUEUED_AT_CAP
        self._start(request, token, deadline)
        return SENT

    def _start(self, request: bytes, token: Any, deadline: float) -> None:
        assert self._loop is not None
        self._in_flight += 1
        task = self._loop.create_task(self._call(request, token, deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, request: bytes, token: Any, deadline: float) -> None:
        written_at = _now()
        refusal: Response | None = None
        try:
            await self._infer(request, timeout=max(0.001, deadline - written_at), metadata=self.metadata)
            status = 200
        except grpc.aio.AioRpcError as error:
            status = _outcome(error)
            if status == 503:  # its retry-after-ms, in the shape the generator reads a REST refusal
                refusal = _refusal(error)
        finally:
            self._in_flight -= 1
        self.on_done(token, written_at, _now(), status, refusal)
        if self._pending and self._in_flight < self.cap:
            self._start(*self._pending.popleft())

    async def prewarm(self, count: int) -> None:
        """Connect the channel before the point starts (one HTTP/2 connection carries every call)."""
        self._ensure_channel()
        assert self._channel is not None
        with contextlib.suppress(TimeoutError):  # the calls that follow report it
            await asyncio.wait_for(self._channel.channel_ready(), self.connect_timeout_s)

    async def close(self) -> None:
        now = _now()
        while self._pending:
            _, token, _ = self._pending.popleft()
            self.on_done(token, 0.0, now, CONNECTION_ERROR, None)
        if self._channel is not None:
            await self._channel.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _refusal(error: grpc.aio.AioRpcError) -> Response | None:
    """An UNAVAILABLE's retry-after-ms trailing metadata as a 503 Response with Retry-After in seconds."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_MS:
            try:
                seconds = float(value) / 1000
            except (TypeError, ValueError):
                return None
            return Response(503, [(b"retry-after", repr(seconds).encode())], b"")
    return None


def _outcome(error: grpc.aio.AioRpcError) -> int:
    """A failed call as the generator counts it: TIMEOUT for its own deadline, CONNECTION_ERROR for an
    UNAVAILABLE no server sent (no retry hint: no connection), else the HTTP status of its gRPC status."""
    code = error.code()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and error.details() == "Deadline Exceeded":
        return TIMEOUT  # grpcio's own words for the call's deadline; a server's 504 has its message
    if code is grpc.StatusCode.UNAVAILABLE:
        trailing = error.trailing_metadata() or ()
        if not any(key == RETRY_AFTER_MS for key, _ in trailing):
            return CONNECTION_ERROR
    return http_status(code)
