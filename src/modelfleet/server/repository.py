"""The models a server process has loaded: each version with its batcher, state and timings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from modelfleet.config.serve import ModelConfig
from modelfleet.errors import ModelfleetError, NotFound, Unavailable
from modelfleet.heap import release_free_heap
from modelfleet.protocol.wire import ModelState
from modelfleet.runtime import Model, load_model
from modelfleet.server.batching import Batcher
from modelfleet.server.metrics import ModelMetrics, ServerMetrics
from modelfleet.server.warmup import WarmupObserver, warm
from modelfleet.types import ModelRef

log = logging.getLogger("modelfleet.server")

# Resolves a model config to an artifact folder and, for registry models, the registry's version number.
ArtifactResolver = Callable[[ModelConfig], tuple[Path, str | None]]
# Opens a model config into a runtime Model; blocking, so the repository calls it in a worker thread.
ModelOpener = Callable[[ModelConfig], Model]


@dataclass(slots=True)
class LoadingModel:
    """A model being opened, verified and warmed: all the repository index can show of it yet.

    `name` is the spec's until the artifact is open, then the served name; `version` likewise.
    """

    name: str
    config: ModelConfig
    version: str = ""
    reason: str = ""
    state: ClassVar[ModelState] = ModelState.LOADING


@dataclass(slots=True)
class LoadedModel:
    """A model that serves: open, with its running batcher, its bound metrics and its warm-up record."""

    name: str
    version: str
    config: ModelConfig
    model: Model
    batcher: Batcher
    metrics: ModelMetrics
    # The warm-up runs made through the batcher before READY; `.runs` holds (items, compute seconds) each.
    warmup: WarmupObserver
    load_s: float
    state: ModelState = ModelState.READY  # READY, then UNLOADING while it drains
    reason: str = ""  # e.g. why its replacement failed, for the repository index


def served_name(config: ModelConfig) -> str | None:
    """The name clients use: the spec's `name`, else a registry model's registry name, else None (the manifest's)."""
    if config.name:
        return config.name
    if config.ref is not None:
        return ModelRef.parse(config.ref).name
    return None


def resolve_path(config: ModelConfig) -> tuple[Path, str | None]:
    if config.path is None:
        raise NotFound(f"model reference {config.ref}: serving from the registry needs a registry configured")
    return config.path, None


class ModelRepository:
    """Name → version → entry. One version per name is the default; others may be loaded beside it."""

    def __init__(
        self,
        metrics: ServerMetrics,
        auto_intra_op_threads: int,
        resolver: ArtifactResolver = resolve_path,
        opener: ModelOpener | None = None,
    ) -> None:
        """`auto_intra_op_threads`: ONNX Runtime threads for a model whose `intra_op_threads` is 0 (auto).
        `opener` opens a config into a Model (another backend, or a test double); by default the
        config's artifact, found by `resolver`, is verified and opened with ONNX Runtime."""
        self._metrics = metrics
        self._auto_intra_op_threads = auto_intra_op_threads
        self._resolver = resolver
        self._opener = opener or self._open
        self._entries: dict[str, dict[str, LoadedModel]] = {}
        self._default: dict[str, str] = {}
        self._pending: list[LoadingModel] = []

    def entries(self) -> list[LoadedModel | LoadingModel]:
        """Every model version, loaded or still loading: the repository index."""
        return [*self.loaded(), *self._pending]

    def loaded(self) -> list[LoadedModel]:
        return [entry for versions in self._entries.values() for entry in versions.values()]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        versions = self._entries.get(name)
        if not versions:
            raise NotFound(f"model '{name}' is not served here")
        chosen = version or self._default.get(name, "")
        entry = versions.get(chosen)
        if entry is None:
            raise NotFound(f"model '{name}' version '{version}' is not served here")
        return entry

    def has(self, name: str) -> bool:
        return bool(self._entries.get(name))

    def versions(self, name: str) -> list[str]:
        if not self._entries.get(name):
            raise NotFound(f"model '{name}' is not loaded")
        return list(self._entries[name])

    def default_version(self, name: str) -> str:
        return self.get(name).version

    def note(self, name: str, version: str, reason: str) -> None:
        """Attach a reason to a serving version (e.g. why its replacement failed) for the repository index."""
        self.get(name, version).reason = reason

    def ready_entry(self, name: str, version: str | None = None) -> LoadedModel:
        entry = self.get(name, version)
        if entry.state is not ModelState.READY:
            raise Unavailable(f"model '{name}' is not ready ({entry.state.value.lower()})", retry_after_s=1.0)
        return entry

    def all_ready(self) -> bool:
        entries = self.entries()
        return bool(entries) and all(entry.state is ModelState.READY for entry in entries)

    async def load(self, config: ModelConfig) -> LoadedModel:
        """Load, verify and warm one model off the event loop; register it READY or raise."""
        pending = LoadingModel(name=config.name or config.ref or str(config.path), config=config)
        self._pending.append(pending)
        started = time.perf_counter()
        model: Model | None = None
        batcher: Batcher | None = None
        entry: LoadedModel | None = None
        try:
            model = await asyncio.to_thread(self._opener, config)
            pending.name, pending.version = model.name, model.version
            # Bound from here on: requests to a model still warming count under its own label.
            metrics = self._metrics.bind(model.name)
            warmup = WarmupObserver(metrics)
            batcher = _batcher(model.name, model, config, warmup)
            batcher.start()
            await warm(batcher, model, config, warmup)
            metrics.warmup_runs.inc(len(warmup.runs))
            await asyncio.to_thread(release_free_heap)
            entry = LoadedModel(
                name=model.name,
                version=model.version,
                config=config,
                model=model,
                batcher=batcher,
                metrics=metrics,
                warmup=warmup,
                load_s=time.perf_counter() - started,
            )
        except ModelfleetError:
            self._metrics.load_failures.inc()
            raise
        except Exception as exc:
            self._metrics.load_failures.inc()
            raise ModelfleetError(f"model {pending.name}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._pending.remove(pending)
            if entry is None:  # failed or cancelled: release what was opened
                if batcher is not None:
                    await batcher.close()
                if model is not None:
                    model.close()
                if not self._serves(pending.name):
                    self._metrics.release(pending.name)
        self._entries.setdefault(entry.name, {})[entry.version] = entry
        self._default.setdefault(entry.name, entry.version)
        self._metrics.load_s.labels(entry.name, entry.version).set(entry.load_s)
        self._metrics.model_ready.labels(entry.name, entry.version).set(1)
        log.info("loaded %s version %s in %.2fs", entry.name, entry.version, entry.load_s)
        return entry

    def set_default(self, name: str, version: str) -> None:
        """Point unversioned requests at `version` in one step (an atomic switch for clients)."""
        self.get(name, version)
        self._default[name] = version

    async def unload(self, name: str, version: str, drain_timeout_s: float = 30.0) -> None:
        entry = self.get(name, version)
        entry.state = ModelState.UNLOADING
        await entry.batcher.drain(drain_timeout_s)
        await entry.batcher.close()
        entry.model.close()
        del self._entries[name][version]
        if not self._entries[name]:
            del self._entries[name]
            self._default.pop(name, None)
            if not self._serves(name):
                self._metrics.release(name)
        elif self._default.get(name) == version:
            self._default[name] = next(iter(self._entries[name]))
        self._metrics.model_ready.labels(name, version).set(0)

    async def drain(self, timeout_s: float) -> None:
        for entry in self.loaded():
            await entry.batcher.drain(timeout_s)

    async def close(self) -> None:
        """Close every loaded model; a load still in progress is cancelled by its owner and cleans up itself."""
        for entry in self.loaded():
            await entry.batcher.close()
            entry.model.close()
        self._entries.clear()

    def _serves(self, name: str) -> bool:
        """True while a version of `name` is loaded or loading."""
        return bool(self._entries.get(name)) or any(entry.name == name for entry in self._pending)

    def _open(self, config: ModelConfig) -> Model:
        path, version = self._resolver(config)
        return load_model(
            path,
            intra_op_threads=config.intra_op_threads or self._auto_intra_op_threads,
            name=served_name(config),
            version=version,
            length_grouping=config.length_grouping,
        )


def _batcher(name: str, model: Model, config: ModelConfig, observer: WarmupObserver) -> Batcher:
    return Batcher(
        model.predict,
        max_batch_size=config.batching.max_batch_size,
        max_delay_s=config.batching.max_delay_s,
        dispatch_when_idle=config.batching.dispatch_when_idle,
        max_queue_items=config.batching.max_queue_items,
        max_queue_wait_s=config.batching.max_queue_wait_s,
        queue_wait_runs=config.batching.queue_wait_runs,
        instances=config.instances,
        observer=observer,
        name=name,
    )
