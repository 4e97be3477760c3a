"""The serve core in process: a `V2App` over a `DataPlane` and a `ModelRepository` built directly, with
models from an injected opener, driven through its ASGI interface (lifespan included) by httpx.

No socket is opened: httpx's ASGITransport calls the app on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelfleet.config.serve import BatchingConfig, ModelConfig
from modelfleet.protocol.codec import DEFAULT_LIMITS, DecodeLimits
from modelfleet.runtime.base import Model
from modelfleet.server.dataplane import DataPlane
from modelfleet.server.http import V2App
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.repository import ModelRepository

BASE_URL = "http://modelfleet.test"
DRAIN_TIMEOUT_S = 5.0


@dataclass
class Lifecycle:
    """What `create_app` wires to the lifespan, less the alias watcher: load at startup, drain at shutdown."""

    dataplane: DataPlane

    async def startup(self) -> None:
        self.dataplane.start()

    async def shutdown(self) -> None:
        await self.dataplane.shutdown(DRAIN_TIMEOUT_S)


@dataclass
class Core:
    app: V2App
    dataplane: DataPlane
    repository: ModelRepository
    metrics: ServerMetrics


def build(
    models: list[Model],
    *,
    max_body_bytes: int = 64 * 1024 * 1024,
    decode_limits: DecodeLimits = DEFAULT_LIMITS,
    opener: Callable[[ModelConfig], Model] | None = None,
    **model_settings: Any,
) -> Core:
    """An app serving `models`, each with the model settings given (ModelConfig and BatchingConfig fields,
    by name; no warm-up runs
    unless `warmup_runs` is given, so a test sees its own runs only). `opener` replaces the one that
    hands out `models` by name."""
    by_name = {model.name: model for model in models}
    batching = {key: value for key, value in model_settings.items() if key in BatchingConfig.model_fields}
    settings = {"warmup_runs": 0, **{k: v for k, v in model_settings.items() if k not in batching}}
    configs = [
        ModelConfig(path=Path(name), name=name, batching=BatchingConfig(**batching), **settings)
        for name in by_name
    ]
    metrics = ServerMetrics()
    repository = ModelRepository(metrics, 1, opener=opener or (lambda config: by_name[str(config.name)]))
    dataplane = DataPlane(repository, configs)
    app = V2App(
        dataplane,
        metrics,
        max_body_bytes=max_body_bytes,
        lifecycle=Lifecycle(dataplane),
        decode_limits=decode_limits,
    )
    return Core(app, dataplane, repository, metrics)


@contextlib.asynccontextmanager
async def lifespan(app: V2App) -> AsyncIterator[None]:
    """Run the ASGI lifespan protocol: startup before the body, shutdown after it."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    await to_app.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(from_app.get(), 5)
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await asyncio.wait_for(from_app.get(), 10)
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def serving(core: Core, wait_loaded: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the started app; by default once every model has loaded."""
    async with lifespan(core.app):
        if wait_loaded:
            await asyncio.wait_for(core.dataplane.wait_loaded(), 10)
        transport = httpx.ASGITransport(app=core.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=10) as client:
            yield client
