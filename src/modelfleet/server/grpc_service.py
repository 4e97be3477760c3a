"""V2 gRPC (Triton's `inference.GRPCInferenceService`) on the server's second port, over the same DataPlane.

REST and gRPC share the data plane, so one model has one queue and one batcher whatever the protocol,
and the same auth (metadata `authorization: Bearer <key>` or `x-api-key`), limits and errors. An error
of the tree becomes the gRPC status of its HTTP one (`GRPC_STATUS`); an Unavailable carries
`retry-after` (whole seconds) and `retry-after-ms` as trailing metadata (protocol/grpc/status.py). grpcio's aio server runs on
the server's event loop; the methods Triton has and modelfleet does not (streaming, shared memory,
trace and log settings) answer UNIMPLEMENTED from the generated base class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelfleet.config.serve import ServerConfig
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.protocol.codec import DEFAULT_LIMITS, DecodeLimits
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc import grpc_service_pb2_grpc as pb_grpc
from modelfleet.protocol.grpc import model_config_pb2 as mc
from modelfleet.protocol.grpc.status import error_metadata, grpc_status
from modelfleet.protocol.grpc.tensors import decode_infer_request, encode_infer_response
from modelfleet.security.auth import Authorizer, authorize_off_loop, credentials_from_headers
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import AdminHandler, V2App
from modelfleet.server.metrics import ServerMetrics, outcome_for_status

log = logging.getLogger("modelfleet.server")
T = TypeVar("T")
# How often grpc.health.v1 picks up a change of readiness (a probe period is seconds).
HEALTH_INTERVAL_S = 0.5
MAX_CONNECTION_AGE_S = 60

_MODEL_DATATYPE = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _peer(context: grpc.aio.ServicerContext) -> str | None:
    """`ipv4:127.0.0.1:5000` → `127.0.0.1:5000` (the REST routes' address form, for audit records)."""
    peer = context.peer()
    return peer.split(":", 1)[1] if peer and ":" in peer else peer or None


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        dataplane: DataPlane,
        metrics: ServerMetrics,
        *,
        authorizer: Authorizer | None = None,
        admin: AdminHandler | None = None,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.authorizer = authorizer
        self.admin = admin
        self.decode_limits = decode_limits

    async def _guard(
        self, context: grpc.aio.ServicerContext, scope: str, work: Callable[[str | None], Awaitable[T]]
    ) -> T:
        """Authorize for `scope`, run `work(caller key id)`, and turn an error into a gRPC status."""
        try:
            caller = None
            if self.authorizer is not None:
                credentials = credentials_from_headers(
                    _metadata(context, "authorization"), _metadata(context, "x-api-key")
                )
                principal = await authorize_off_loop(self.authorizer, credentials, scope, _peer(context))
                caller = principal.key_id
            return await work(caller)
        except ModelfleetError as exc:
            await self._abort(context, exc)
        except Exception:  # a bug, not a client error: log it here, answer without internals
            log.exception("unhandled error in a gRPC call needing %s", scope)
            await self._abort(context, ModelfleetError("internal server error"))
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _abort(self, context: grpc.aio.ServicerContext, exc: ModelfleetError) -> None:
        trailing = error_metadata(exc)
        if trailing:
            context.set_trailing_metadata(trailing)
        await context.abort(grpc_status(exc), exc.message)

    # -- health and metadata --------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        async def work(_: str | None) -> pb.ModelReadyResponse:
            return pb.ModelReadyResponse(
                ready=self.dataplane.model_ready(request.name, request.version or None)
            )

        return await self._guard(context, "read", work)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        async def work(_: str | None) -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

        return await self._guard(context, "read", work)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def work(_: str | None) -> pb.ModelMetadataResponse:
            meta = self.dataplane.model_metadata(request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**spec) for spec in meta["inputs"]],
                outputs=[tensor(**spec) for spec in meta["outputs"]],
            )

        return await self._guard(context, "read", work)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        async def work(_: str | None) -> pb.ModelConfigResponse:
            meta = self.dataplane.model_metadata(request.name, request.version or None)
            parameters = meta.get("parameters", {})
            config = mc.ModelConfig(
                name=meta["name"],
                platform=meta["platform"],
                max_batch_size=int(parameters.get("max_batch_size", 0)),
                input=[
                    mc.ModelInput(name=s["name"], data_type=_MODEL_DATATYPE[s["datatype"]], dims=s["shape"])
                    for s in meta["inputs"]
                ],
                output=[
                    mc.ModelOutput(name=s["name"], data_type=_MODEL_DATATYPE[s["datatype"]], dims=s["shape"])
                    for s in meta["outputs"]
                ],
            )
            return pb.ModelConfigResponse(config=config)

        return await self._guard(context, "read", work)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        async def work(_: str | None) -> pb.ModelStatisticsResponse:
            entries = self.dataplane.repository_index()
            if request.name:
                self.dataplane.model_metadata(request.name, request.version or None)  # NotFound if unknown
                entries = [e for e in entries if e["name"] == request.name]
            # Names and versions only: the counts live in /metrics (Prometheus), not duplicated here.
            return pb.ModelStatisticsResponse(
                model_stats=[pb.ModelStatistics(name=e["name"], version=e["version"]) for e in entries]
            )

        return await self._guard(context, "read", work)

    # -- repository extension -------------------------------------------------------------------
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        async def work(_: str | None) -> pb.RepositoryIndexResponse:
            entries = self.dataplane.repository_index()
            if request.ready:
                entries = [e for e in entries if e["state"] == "READY"]
            model_index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(
                models=[
                    model_index(
                        name=e["name"], version=e["version"], state=str(e["state"]), reason=e["reason"]
                    )
                    for e in entries
                ]
            )

        return await self._guard(context, "read", work)

    async def _repository(self, action: str, name: str, parameters: Any, context: Any) -> None:
        async def work(caller: str | None) -> None:
            if self.admin is None:  # as over REST
                raise NotFound("the repository load/unload extension is not enabled on this server")
            values: dict[str, object] = {}
            for key, parameter in parameters.items():
                kind = parameter.WhichOneof("parameter_choice")
                if kind == "bytes_param":
                    raise InvalidInput(
                        f"repository parameter {key!r}: bytes_param (model files sent inline) is not "
                        "supported; load by name, `version` or `alias`"
                    )
                values[key] = getattr(parameter, kind) if kind is not None else None
            # The REST route's body, so both reach the same handler with the same checks and audit record.
            body = orjson.dumps({"parameters": values}) if values else b""
            await self.admin(action, name, body, caller, _peer(context))

        await self._guard(context, "admin", work)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        await self._repository("load", request.model_name, request.parameters, context)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self._repository("unload", request.model_name, request.parameters, context)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ------------------------------------------------------------------------------
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        name = request.model_name
        bound = self.metrics.for_model(name)

        async def work(_: str | None) -> pb.ModelInferResponse:
            try:
                decoded = decode_infer_request(request, self.decode_limits)
                response = await self.dataplane.infer(
                    name, request.model_version or None, decoded, context.time_remaining()
                )
                answer = encode_infer_response(response)
            except ModelfleetError as exc:
                bound.count(outcome_for_status(exc.http_status))
                raise
            bound.count("success")
            bound.observe_request_s(time.perf_counter() - started)
            return answer

        return await self._guard(context, f"infer:{name}", work)


def grpc_server_options(
    max_message_bytes: int, max_metadata_bytes: int, reuse_port: bool
) -> list[tuple[str, Any]]:
    """grpcio channel arguments: the server's request limits as message and metadata sizes."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_metadata_size", max_metadata_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Clients (the router's round_robin channels) reconnect and re-resolve at least this often, so
        # replicas added by a scale-up get calls; a GOAWAY lets calls in flight finish first.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_S * 1000),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_S * 1000),
    ]


class GrpcFront:
    """The server's gRPC port: the inference service plus grpc.health.v1 (SERVING while the data plane is
    ready, for Kubernetes' gRPC probes), started and stopped with the HTTP server."""

    def __init__(self, service: InferenceService, options: list[tuple[str, Any]]) -> None:
        self.service = service
        self.server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, self.server)  # type: ignore[no-untyped-call]
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._serving: bool | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    def bind(self, host: str, port: int, tls: tuple[bytes, bytes] | None = None) -> int:
        """Listen on host:port (0: a free port), with TLS when `tls` is (key PEM, certificate PEM)."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is None:
                bound = self.server.add_insecure_port(address)
            else:
                bound = self.server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
        except RuntimeError:  # grpcio's "failed to bind"
            bound = 0
        if bound == 0:
            raise InvalidInput(f"cannot listen for gRPC on {address} (server.grpc_port): is it in use?")
        self.port = int(bound)
        return self.port

    async def start(self) -> None:
        await self.server.start()
        await self.refresh_health()
        self._watch = asyncio.get_running_loop().create_task(self._watch_health())

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self.refresh_health()

    async def refresh_health(self) -> None:
        """Mirror the data plane's readiness into grpc.health.v1 (the overall "" service and the V2 one)."""
        serving = self.service.dataplane.ready()
        if serving != self._serving:
            self._serving = serving
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service_name in ("", "inference.GRPCInferenceService"):
                await self.health.set(service_name, status)

    async def stop(self, grace_s: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def grpc_front(app: V2App, config: ServerConfig, reuse_port: bool) -> GrpcFront:
    """The gRPC front of a server's app: its data plane, auth, admin handler and request limits."""
    service = InferenceService(
        app.dataplane,
        app.metrics,
        authorizer=app.authorizer,
        admin=app.admin,
        decode_limits=app.decode_limits,
    )
    return GrpcFront(service, grpc_server_options(config.max_body_bytes, config.max_header_bytes, reuse_port))


def tls_pair(config: ServerConfig) -> tuple[bytes, bytes] | None:
    """(key PEM, certificate PEM) when the server has a certificate, for the gRPC port's TLS."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    return config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes()
