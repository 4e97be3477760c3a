"""Assemble a server from a spec: metrics, repository, dataplane and routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from modelfleet.config.serve import ServeSpec
from modelfleet.errors import ModelfleetError
from modelfleet.runtime.onnx import default_intra_op_threads
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import Authorizer, V2App
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import ArtifactResolver, ModelRepository, resolve_path


@dataclass
class _Lifecycle:
    dataplane: DataPlane
    drain_timeout_s: float
    on_fatal: Callable[[ModelfleetError], None] | None = None
    started: bool = field(default=False)

    async def startup(self) -> None:
        self.dataplane.start(self.on_fatal)
        self.started = True

    async def shutdown(self) -> None:
        await self.dataplane.shutdown(self.drain_timeout_s)


def create_app(
    spec: ServeSpec,
    *,
    on_fatal: Callable[[ModelfleetError], None] | None = None,
    authorizer: Authorizer | None = None,
    resolver: ArtifactResolver = resolve_path,
) -> V2App:
    """An ASGI app serving every model of `spec`. Models load in the background once it starts."""
    metrics = ServerMetrics()
    threads = default_intra_op_threads(spec.server.workers)
    explicit = {model.intra_op_threads for model in spec.models if model.intra_op_threads}
    repository = ModelRepository(
        metrics, intra_op_threads=min(explicit) if explicit else threads, resolver=resolver
    )
    dataplane = DataPlane(repository, spec.models, workers=spec.server.workers)
    lifecycle = _Lifecycle(dataplane, spec.server.graceful_shutdown_s, on_fatal)
    return V2App(
        dataplane,
        metrics,
        max_body_bytes=spec.server.max_body_bytes,
        lifecycle=lifecycle,
        authorizer=authorizer,
    )
