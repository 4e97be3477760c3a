"""The router's V2 gRPC front: grpcio's aio server in front, one aio channel per replica behind.

It shares the HTTP router's routing table, so a replica's requests in flight count both protocols and
the same least-outstanding choice, in-flight limits, overload holds and retry budget apply. Messages
pass through as bytes: only the model name (field 1 of ModelInferRequest, ModelReadyRequest,
ModelMetadataRequest, ModelConfigRequest and ModelStatisticsRequest) is read from the wire, so a
request's tensors are never parsed or copied by the router. Metadata (the caller's key) passes through and
the servers check it, as on REST; the call's deadline is the shorter of the client's and the router's
`request_timeout_s`.

An UNAVAILABLE from a replica is retried once on another replica within the retry budget, as over HTTP:
with the server's `retry-after-ms` trailing metadata (its admission control refused) the replica is held
for that model (at most `max_overload_hold_s`, not for calls with their own deadline); without it (no
connection) the replica counts as not ready until its next health poll says otherwise. ServerLive,
ServerReady (every model has a ready replica), ServerMetadata and RepositoryIndex (the union of each
group's) are answered by the router; grpc.health.v1 reports SERVING once every upstream was polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelfleet import __version__
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.fleet.router import Router
from modelfleet.fleet.router_metrics import SHED_RETRY_BUDGET
from modelfleet.fleet.router_shed import no_replica
from modelfleet.fleet.routing import Replica
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc.status import RETRY_AFTER_MS, grpc_status, http_status, retry_metadata
from modelfleet.protocol.wire import ModelState
from modelfleet.security.auth import authorize_off_loop, credentials_from_headers

SERVICE = "inference.GRPCInferenceService"
# Methods forwarded to a replica of the model named in field 1 of the request, with the scope a server
# would ask (the router checks it only before answering NOT_FOUND, so no answer tells who may see what).
_FORWARDED: dict[str, tuple[type[Any], bool]] = {
    "ModelInfer": (pb.ModelInferRequest, True),
    "ModelReady": (pb.ModelReadyRequest, False),
    "ModelMetadata": (pb.ModelMetadataRequest, False),
    "ModelConfig": (pb.ModelConfigRequest, False),
    "ModelStatistics": (pb.ModelStatisticsRequest, False),
}
# Metadata a client sends that is the HTTP/2 connection's own, not the call's: not forwarded.
_HOP_BY_HOP = ("user-agent", "grpc-", ":")
_now = time.monotonic
Behavior = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


def model_name(message: bytes, kind: type[Any]) -> str:
    """Field 1 (a string) of a serialized request, read from the wire when it comes first (protobuf
    writes fields in number order, so it does whenever it is set), else from a full parse."""
    if message[:1] == b"\x0a":
        length, shift, position = 0, 0, 1
        while position < len(message) and position < 6:
            byte = message[position]
            length |= (byte & 0x7F) << shift
            position += 1
            if byte < 0x80:
                end = position + length
                if end <= len(message):
                    with contextlib.suppress(UnicodeDecodeError):
                        return bytes(message[position:end]).decode()
                break
            shift += 7
    try:
        parsed = kind.FromString(message)
    except Exception:  # DecodeError: not a message of this kind
        raise InvalidInput("request is not a valid protobuf message") from None
    return str(parsed.model_name if kind is pb.ModelInferRequest else parsed.name)


def _forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or () if not key.startswith(_HOP_BY_HOP)
    )


class RouterGrpc:
    """The gRPC front of one router: its server, its channels to the replicas, its health service."""

    def __init__(self, router: Router) -> None:
        self.router = router
        settings = router.settings
        missing = [u.name for u in settings.upstreams if u.grpc_address is None]
        if missing:
            raise InvalidInput(
                f"router grpc_port is set but upstream {missing[0]!r} has no grpc_address (its server.grpc_port)"
            )
        size = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ]
        self.channels = {
            u.name: grpc.aio.insecure_channel(
                str(u.grpc_address),
                options=[
                    ("grpc.max_receive_message_length", settings.max_upstream_response_bytes),
                    ("grpc.max_send_message_length", -1),
                    # A `dns:///` address (Kubernetes: a group's headless Service) spreads calls over
                    # every address it resolves to; one address (a local replica) is one subchannel.
                    ("grpc.lb_policy_name", "round_robin"),
                ],
            )
            for u in settings.upstreams
        }
        self._calls: dict[tuple[str, str], Any] = {
            (name, method): channel.unary_unary(f"/{SERVICE}/{method}")
            for name, channel in self.channels.items()
            for method in (*_FORWARDED, "RepositoryIndex")
        }
        self.server = grpc.aio.server(options=[*size, ("grpc.max_metadata_size", settings.max_header_bytes)])
        handlers: dict[str, Any] = {
            method: grpc.unary_unary_rpc_method_handler(self._forwarder(method, kind, infer))
            for method, (kind, infer) in _FORWARDED.items()
        }
        for method, behavior in (
            ("ServerLive", self._server_live),
            ("ServerReady", self._server_ready),
            ("ServerMetadata", self._server_metadata),
            ("RepositoryIndex", self._repository_index),
        ):
            handlers[method] = grpc.unary_unary_rpc_method_handler(behavior)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    # lifecycle ------------------------------------------------------------------------------------

    def bind(self) -> int:
        settings = self.router.settings
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            if settings.tls_cert_file is None or settings.tls_key_file is None:
                self.port = self.server.add_insecure_port(address)
            else:
                pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
                self.port = self.server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise InvalidInput(f"cannot listen for gRPC on {address} (router grpc_port): is it in use?")
        return self.port

    async def start(self) -> None:
        await self.server.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_health())

    async def _watch_health(self) -> None:
        serving: bool | None = None
        while True:
            now_serving = self.router.polled_all_once
            if now_serving != serving:
                serving = now_serving
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if serving
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for service in ("", SERVICE):
                    await self.health.set(service, status)
            await asyncio.sleep(self.router.settings.health_interval_s)

    async def stop(self, grace_s: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for channel in self.channels.values():
            await channel.close()

    # the router's own answers -----------------------------------------------------------------------

    async def _authorize(self, context: grpc.aio.ServicerContext, scope: str) -> None:
        auth = self.router.auth
        if auth is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        credentials = credentials_from_headers(
            _text(metadata.get("authorization")), _text(metadata.get("x-api-key"))
        )
        try:
            await authorize_off_loop(auth, credentials, scope)
        except ModelfleetError as exc:
            await context.abort(grpc_status(exc), exc.message)

    async def _server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(pb.ServerLiveResponse(live=True).SerializeToString())

    async def _server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(pb.ServerReadyResponse(ready=self.router.table.fleet_ready()).SerializeToString())

    async def _server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._authorize(context, "read")
        answer = pb.ServerMetadataResponse(
            name=f"modelfleet-router/{self.router.settings.fleet}", version=__version__, extensions=[]
        )
        return bytes(answer.SerializeToString())

    async def _repository_index(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The union of every group's index (one ready replica asked per group); models without a ready
        replica are listed as UNAVAILABLE."""
        await self._authorize(context, "read")
        merged = pb.RepositoryIndexResponse()
        seen: set[str] = set()
        asked: set[str] = set()
        metadata = _forwarded_metadata(context)
        for replica in self.router.table.replicas:
            if not replica.ready or replica.group in asked:
                continue
            asked.add(replica.group)
            try:
                raw = await self._calls[(replica.name, "RepositoryIndex")](
                    request, timeout=self.router.settings.request_timeout_s, metadata=metadata
                )
            except grpc.aio.AioRpcError:
                continue
            for entry in pb.RepositoryIndexResponse.FromString(raw).models:
                if entry.name not in seen:
                    seen.add(entry.name)
                    merged.models.append(entry)
        for model in self.router.table.by_model:
            if model not in seen:
                merged.models.add(name=model, state=str(ModelState.UNAVAILABLE), reason="no ready replica")
        return bytes(merged.SerializeToString())

    # forwarding -------------------------------------------------------------------------------------

    def _forwarder(self, method: str, kind: type[Any], infer: bool) -> Behavior:
        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._forward(method, kind, infer, request, context)

        return forward

    async def _forward(
        self, method: str, kind: type[Any], infer: bool, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        router = self.router
        started = _now()
        try:
            model = model_name(request, kind)
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        if not router.table.has_model(model):
            await self._authorize(context, f"infer:{model}" if infer else "read")
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"model {model!r} is not in fleet {router.settings.fleet!r}"
            )
        client_left_s = context.time_remaining()
        timeout_s = router.settings.request_timeout_s
        if client_left_s is not None:
            timeout_s = min(timeout_s, client_left_s)
        deadline = started + timeout_s
        metadata = _forwarded_metadata(context)
        if infer:
            router.budget.requests += 1
        replica = router.table.choose(model, now=started)
        failed: Replica | None = None
        while replica is not None:
            current = replica
            current.sent(model)
            refused = False
            try:
                answer: bytes = await self._calls[(current.name, method)](
                    request, timeout=max(0.001, deadline - _now()), metadata=metadata
                )
            except grpc.aio.AioRpcError as error:
                code = error.code()
                trailing = tuple(error.trailing_metadata() or ())
                if code is grpc.StatusCode.UNAVAILABLE:
                    refused = self._after_unavailable(current, model, trailing, client_left_s is not None)
                if code is grpc.StatusCode.UNAVAILABLE and failed is None:
                    replica = router.table.choose(model, exclude=current, now=_now())
                    if replica is not None and router.budget.try_retry():
                        router.metrics.retried(model)
                        failed = current
                        continue
                    if replica is not None:
                        router.metrics.shed(model, SHED_RETRY_BUDGET)
                self._observe(infer, model, code, started)
                context.set_trailing_metadata(trailing)
                await context.abort(code, error.details() or "")
                raise  # abort raises; this line is for readers and type checkers
            finally:
                current.finished(model, refused, _now())
            self._observe(infer, model, grpc.StatusCode.OK, started)
            return answer
        code, message, retry_s = self._unavailable(model, failed)
        context.set_trailing_metadata(retry_metadata(retry_s))
        self._observe(infer, model, code, started)
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")

    def _after_unavailable(
        self, replica: Replica, model: str, trailing: tuple[Any, ...], own_deadline: bool
    ) -> bool:
        """A replica's UNAVAILABLE: hold the model there for its retry-after-ms (its admission control:
        True, unless the client's own deadline was what it refused), or, with no hint (no connection),
        count it not ready until a health poll says otherwise."""
        retry_ms = next((value for key, value in trailing if key == RETRY_AFTER_MS), None)
        if retry_ms is None:
            replica.set_ready(False, _now())
            return False
        if own_deadline:
            return False
        try:
            retry_s = float(retry_ms) / 1000
        except ValueError:
            return False
        hold_s = self.router.settings.max_overload_hold_s
        if hold_s > 0:
            self.router.table.hold(replica, model, _now() + min(retry_s, hold_s))
        return True

    def _unavailable(self, model: str, failed: Replica | None) -> tuple[grpc.StatusCode, str, float]:
        router = self.router
        after = f" ({failed.name} was unavailable)" if failed is not None else ""
        message, held_s = no_replica(router.table, router.metrics, model, after, _now())
        retry_s = held_s if held_s is not None else float(router.settings.retry_after_s)
        return grpc.StatusCode.UNAVAILABLE, message, retry_s

    def _observe(self, infer: bool, model: str, code: grpc.StatusCode, started: float) -> None:
        if infer:  # the HTTP side counts its model routes alike: inferences are what the figures are about
            self.router.metrics.observe(model, http_status(code), _now() - started)


def _text(value: str | bytes | None) -> str | None:
    return value.decode("latin-1") if isinstance(value, bytes) else value
