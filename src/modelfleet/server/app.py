"""Assemble a server from a spec: metrics, repository, registry, auth, dataplane and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelfleet.config.serve import ServeSpec
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.observe.tracing import Tracer, tracer_for
from modelfleet.protocol.codec import DecodeLimits
from modelfleet.runtime.onnx import default_intra_op_threads
from modelfleet.security.audit import AuditLog
from modelfleet.security.auth import Authenticator, Authorizer
from modelfleet.server.alias_watch import AliasWatcher
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import AdminHandler, V2App
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import ModelRepository, resolve_path

log = logging.getLogger("modelfleet.server")


@dataclass
class _Lifecycle:
    dataplane: DataPlane
    drain_timeout_s: float
    watcher: AliasWatcher | None
    on_fatal: Callable[[ModelfleetError], None] | None = None
    tracer: Tracer | None = None

    async def startup(self) -> None:
        self.dataplane.start(self.on_fatal)
        if self.watcher is not None:
            self.watcher.start()

    async def shutdown(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        await self.dataplane.shutdown(self.drain_timeout_s)
        if self.tracer is not None:  # export the last spans (at most tracing.export_timeout_s)
            await asyncio.to_thread(self.tracer.shutdown)


def _authorizer(spec: ServeSpec, audit: AuditLog | None) -> Authorizer | None:
    if not spec.auth.enabled:
        return None
    assert spec.auth.keys_file is not None
    return Authenticator.from_keys_file(spec.auth.keys_file, audit=audit)


def _admin_handler(spec: ServeSpec, dataplane: DataPlane, audit: AuditLog | None) -> AdminHandler:
    async def handle(
        action: str, model: str, body: bytes, caller: str | None, client: str | None
    ) -> dict[str, Any]:
        parameters: dict[str, object] = {}
        if body.strip():
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise InvalidInput("repository request body must be JSON") from None
            raw = document.get("parameters", {}) if isinstance(document, dict) else None
            if not isinstance(raw, dict):
                raise InvalidInput("'parameters' must be an object")
            parameters = raw
        outcome = "ok"
        try:
            if action == "load":
                await dataplane.load_model(model, parameters)
            else:
                await dataplane.unload_model(model, spec.server.graceful_shutdown_s)
        except ModelfleetError as exc:
            outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            if audit is not None:
                audit.record(
                    f"repository.{action}", model=model, key_id=caller, client=client, outcome=outcome
                )
        return {}

    return handle


def create_app(
    spec: ServeSpec,
    *,
    on_fatal: Callable[[ModelfleetError], None] | None = None,
    audit: AuditLog | None = None,
    peers_ready: Callable[[], bool] | None = None,
    metrics_dir: Path | None = None,
) -> V2App:
    """An ASGI app serving every model of `spec`. Models load in the background once it starts.

    ``audit`` receives admin actions (repository load/unload) and auth failures, each with the client's
    address; by default the spec's ``auth.audit_log`` (a path, or ``-`` for stdout), if any.
    One worker of a pool (``server.workers`` > 1) passes ``peers_ready``, whether every other worker has
    loaded its models, and ``metrics_dir``, the folder where all of them write their metrics.
    Each model runs with its own ``intra_op_threads``; 0 means ``server.cpu_cores`` (default: the cores
    the process may use) ÷ ``server.workers``.
    """
    if audit is None and spec.auth.audit_log is not None:
        audit = AuditLog(spec.auth.audit_log)
    metrics = ServerMetrics(multiprocess_dir=metrics_dir)
    uses_registry = spec.registry.root is not None or any(model.ref is not None for model in spec.models)
    source = None
    if uses_registry:
        from modelfleet.server.registry_source import RegistrySource

        source = RegistrySource(spec.registry)
    residency = spec.residency.per_worker(spec.server.workers)
    repository = ModelRepository(
        metrics,
        auto_intra_op_threads=default_intra_op_threads(spec.server.workers, spec.server.cpu_cores),
        resolver=source.resolve if source is not None else resolve_path,
        residency=residency,
        # Spinning threads speed a session that runs alone and slow several running at once (their
        # threads then spin on each other's cores): only a server of one model, one run at a time.
        spin_threads=len(spec.models) == 1 and spec.models[0].instances == 1 and not residency.lazy,
    )
    dataplane = DataPlane(
        repository, spec.models, registry_enabled=source is not None, peers_ready=peers_ready
    )
    watcher = None
    if source is not None:
        watcher = AliasWatcher(repository, source, spec.models, spec.registry.watch_interval_s)
    if not spec.auth.enabled and spec.server.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "auth is off and the server listens on %s: anyone who can reach it can use it", spec.server.host
        )
    tracer = tracer_for(spec.tracing, "modelfleet-server")
    return V2App(
        dataplane,
        metrics,
        max_body_bytes=spec.server.max_body_bytes,
        lifecycle=_Lifecycle(dataplane, spec.server.graceful_shutdown_s, watcher, on_fatal, tracer),
        authorizer=_authorizer(spec, audit),
        protect_metrics=spec.auth.protect_metrics,
        admin=_admin_handler(spec, dataplane, audit),
        decode_limits=DecodeLimits(
            max_element_bytes=spec.server.max_element_bytes, max_tensor_bytes=spec.server.max_tensor_bytes
        ),
        ui=spec.ui if spec.ui.enabled else None,
        tracer=tracer,
    )
