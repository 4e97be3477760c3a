"""The models a server process has loaded: each version with its batcher, state and timings."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from modelfleet.config.residency import ResidencyConfig
from modelfleet.config.serve import ModelConfig
from modelfleet.errors import DeadlineExceeded, ModelfleetError, NotFound, Unavailable
from modelfleet.heap import release_free_heap
from modelfleet.manifest import Manifest
from modelfleet.protocol.wire import ModelMetadata, ModelState
from modelfleet.runtime import Model, load_model
from modelfleet.runtime.onnx import OnnxModel
from modelfleet.server.batching import Batcher
from modelfleet.server.metrics import ModelMetrics, ServerMetrics
from modelfleet.server.registry_source import pinned_config
from modelfleet.server.residency import Demand, Resident, choose_evictions
from modelfleet.server.residency_metrics import ResidencyMetrics
from modelfleet.server.sessions import NamedModel, Session, SessionPool, artifact_key, named, rss_bytes
from modelfleet.server.warmup import WarmupObserver, warm
from modelfleet.types import ModelRef

log = logging.getLogger("modelfleet.server")

# Resolves a model config to an artifact folder and, for registry models, the registry's version number.
ArtifactResolver = Callable[[ModelConfig], tuple[Path, str | None]]
# Opens a model config into a runtime Model; blocking, so the repository calls it in a worker thread.
ModelOpener = Callable[[ModelConfig], Model]
NOT_LOADED = "not loaded (lazy): its first request loads it"


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
    model: NamedModel  # this name's view of a session it may share with other names
    batcher: Batcher
    metrics: ModelMetrics
    # The warm-up runs made through the batcher before READY; `.runs` holds (items, compute seconds) each.
    warmup: WarmupObserver
    load_s: float
    # The shared session's recent demand (residency policy); the same object for every name on it.
    demand: Demand = field(default_factory=Demand)
    state: ModelState = ModelState.READY  # READY, then UNLOADING while it drains
    reason: str = ""  # e.g. why its replacement failed, for the repository index


@dataclass(slots=True)
class LazyModel:
    """A model registered to load on its first request (a memory budget is set): its index entry
    while it is not loaded."""

    name: str
    version: str
    config: ModelConfig
    manifest: Manifest  # what its metadata answers from while it is not loaded
    pinned: bool = False
    reason: str = NOT_LOADED
    state: ClassVar[ModelState] = ModelState.UNAVAILABLE


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


def request_budget_s(config: ModelConfig, client_budget_s: float | None) -> float:
    """A request's deadline from its arrival: the model's `timeout_s`, or the client's when shorter."""
    return config.timeout_s if client_budget_s is None else min(config.timeout_s, client_budget_s)


class ModelRepository:
    """Name → version → entry. One version per name is the default; others may be loaded beside it.

    Names whose artifacts have the same content share one open session (`SessionPool`). With a memory
    budget (`residency`), models not pinned are registered at start and load on their first request;
    loading one that does not fit unloads the least valuable others (server/residency.py).
    """

    def __init__(
        self,
        metrics: ServerMetrics,
        auto_intra_op_threads: int,
        resolver: ArtifactResolver = resolve_path,
        opener: ModelOpener | None = None,
        residency: ResidencyConfig | None = None,
        spin_threads: bool = False,
    ) -> None:
        """`auto_intra_op_threads`: ONNX Runtime threads for a model whose `intra_op_threads` is 0 (auto);
        `spin_threads`: sessions' intra-op threads spin within a run (for a server of one model).
        `opener` opens a config into a Model (another backend, or a test double; such models are not
        shared); by default the config's artifact, found by `resolver`, is verified and opened with ONNX
        Runtime, once per distinct content."""
        self._metrics = metrics
        self._auto_intra_op_threads = auto_intra_op_threads
        self._spin_threads = spin_threads
        self._resolver = resolver
        self._opener = opener
        self._residency = residency or ResidencyConfig()
        self._residency_metrics = ResidencyMetrics(metrics)
        self._residency_metrics.budget_bytes.set(self._residency.memory_budget_bytes or 0)
        self._entries: dict[str, dict[str, LoadedModel]] = {}
        self._default: dict[str, str] = {}
        self._pending: list[LoadingModel] = []
        self._pool = SessionPool()
        self._unshared = itertools.count()
        # Per content key, kept across evictions: its demand, and its last measured size (the room a
        # reload needs before it has been measured again).
        self._demand: dict[str, Demand] = {}
        self._sizes: dict[str, int] = {}
        self._loaded_at: dict[str, float] = {}
        self._users: dict[str, set[tuple[str, str]]] = {}  # key → (name, version) on it
        self._lazy: dict[str, dict[str, LazyModel]] = {}
        self._cold: dict[tuple[str, str], asyncio.Task[LoadedModel | None]] = {}
        self._cold_waiting = 0
        self._cold_waiters: dict[tuple[str, str], int] = {}  # requests waiting for each slot's load
        self._load_slots = asyncio.Semaphore(self._residency.max_concurrent_loads)

    def entries(self) -> list[LoadedModel | LoadingModel | LazyModel]:
        """Every model version, loaded, loading or registered to load lazily: the repository index."""
        loading = {pending.name for pending in self._pending}
        lazy = [
            entry
            for name, versions in self._lazy.items()
            if name not in loading
            for version, entry in versions.items()
            if version not in self._entries.get(name, {})
        ]
        return [*self.loaded(), *self._pending, *lazy]

    def loaded(self) -> list[LoadedModel]:
        return [entry for versions in self._entries.values() for entry in versions.values()]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        versions = self._entries.get(name)
        if not versions:
            if self._lazy.get(name):
                raise Unavailable(f"model '{name}' is {NOT_LOADED}", retry_after_s=1.0)
            raise NotFound(f"model '{name}' is not served here")
        chosen = version or self._default.get(name, "")
        entry = versions.get(chosen)
        if entry is None:
            raise NotFound(f"model '{name}' version '{version}' is not served here")
        return entry

    def has(self, name: str) -> bool:
        return bool(self._entries.get(name)) or bool(self._lazy.get(name))

    def is_lazy(self, name: str) -> bool:
        return name in self._lazy

    def versions(self, name: str) -> list[str]:
        if not self.has(name):
            raise NotFound(f"model '{name}' is not loaded")
        return list({**self._lazy.get(name, {}), **self._entries.get(name, {})})

    def default_version(self, name: str) -> str:
        return self.get(name).version

    def current_version(self, name: str) -> str:
        """The version unversioned requests get: the loaded default, else a lazy name's registered one."""
        if self._entries.get(name) or not self._lazy.get(name):
            return self.default_version(name)
        return next(iter(self._lazy[name]))

    def is_loaded(self, name: str, version: str) -> bool:
        return version in self._entries.get(name, {})

    def note(self, name: str, version: str, reason: str) -> None:
        """Attach a reason to a serving version (e.g. why its replacement failed) for the repository index."""
        self.get(name, version).reason = reason

    def ready_entry(self, name: str, version: str | None = None) -> LoadedModel:
        entry = self.get(name, version)
        if entry.state is not ModelState.READY:
            raise Unavailable(f"model '{name}' is not ready ({entry.state.value.lower()})", retry_after_s=1.0)
        return entry

    def resident(self, name: str) -> LoadedModel | None:
        """The default version of `name` when it is loaded and READY; None while a lazy model is not."""
        versions = self._entries.get(name)
        entry = None if not versions else versions.get(self._default.get(name, ""))
        return entry if entry is not None and entry.state is ModelState.READY else None

    def all_ready(self) -> bool:
        """Every loaded or loading version READY; a lazy model not loaded is servable and does not count."""
        eager: list[LoadedModel | LoadingModel] = [*self.loaded(), *self._pending]
        return (bool(eager) or bool(self._lazy)) and all(entry.state is ModelState.READY for entry in eager)

    def lazy_metadata(self, name: str, version: str | None) -> ModelMetadata | None:
        """Metadata of a lazy model that is not loaded, from its manifest (a metadata request does not
        load it); None when `name` is loaded or not lazy."""
        if self._entries.get(name) or not self._lazy.get(name):
            return None
        lazy = self._lazy[name].get(version or next(iter(self._lazy[name])))
        if lazy is None:
            raise NotFound(f"model '{name}' version '{version}' is not served here")
        manifest = lazy.manifest
        metadata: ModelMetadata = {
            "name": lazy.name,
            "versions": [lazy.version],
            "platform": OnnxModel.platform,
            "inputs": [field.spec().to_json() for field in manifest.inputs],  # type: ignore[misc]
            "outputs": [field.spec().to_json() for field in manifest.outputs],  # type: ignore[misc]
            "parameters": {
                "sha256": manifest.files.get(manifest.model_file, ""),
                "max_batch_size": lazy.config.batching.max_batch_size,
                "state": lazy.state,
            },
        }
        return metadata

    def touch(self, entry: LoadedModel) -> None:
        """Count one request of `entry` in its artifact's demand (with a budget only: O(1))."""
        if self._residency.lazy:
            entry.demand.hit(time.monotonic(), self._residency.demand_half_life_s)

    # -- loading --------------------------------------------------------------------------------
    async def add(self, config: ModelConfig) -> str:
        """A model of the spec: loaded now, or with a budget registered to load on its first request
        (pinned ones load now and stay). Returns its served name."""
        if not self._residency.lazy:
            return (await self.load(config)).name
        path, registry_version = await asyncio.to_thread(self._resolver, config)
        manifest = (await asyncio.to_thread(artifact_key, path, self._threads(config), True))[1]
        name, version = served_name(config) or manifest.name, registry_version or manifest.version
        if registry_version is not None and config.ref is not None:
            config = pinned_config(config, registry_version)  # a later load opens what was registered
        pinned = name in self._residency.pinned
        self._lazy.setdefault(name, {})[version] = LazyModel(name, version, config, manifest, pinned)
        if pinned:
            await self.load(config)
        return name

    async def serving(
        self, name: str, version: str | None = None, client_budget_s: float | None = None
    ) -> LoadedModel:
        """The READY entry for a request, loading a lazy model first. Its request waits for the load up
        to its deadline (the model's `timeout_s`, or `client_budget_s` when shorter), then gets 504: a
        load queued behind others must not hold a request past the time its client gave it."""
        versions = self._entries.get(name)
        chosen = version or self._default.get(name, "")
        if versions and chosen in versions and versions[chosen].state is ModelState.READY:
            return versions[chosen]
        registered = self._lazy.get(name)
        if not registered:
            return self.ready_entry(name, version)
        lazy = registered.get(version or next(iter(registered)))
        if lazy is None:
            raise NotFound(f"model '{name}' version '{version}' is not served here")
        if self._cold_waiting >= self._residency.max_cold_requests:
            self._residency_metrics.cold_refused.inc()
            raise Unavailable(
                f"model '{name}' is not loaded and {self._cold_waiting} requests already wait for loads, "
                f"the limit of {self._residency.max_cold_requests} (residency.max_cold_requests)",
                retry_after_s=self._cold_retry_after_s(),
            )
        slot = (lazy.name, lazy.version)
        task = self._cold.get(slot)
        if task is None:
            task = self._cold[slot] = asyncio.get_running_loop().create_task(self._cold_load(lazy, slot))
            task.add_done_callback(lambda done: self._cold_done(slot, done))
        budget_s = request_budget_s(lazy.config, client_budget_s)
        self._cold_waiting += 1
        self._cold_waiters[slot] = self._cold_waiters.get(slot, 0) + 1
        try:
            loaded = await asyncio.wait_for(asyncio.shield(task), budget_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"model '{name}' is not loaded and its load did not finish within the request's deadline of "
                f"{budget_s:g} s (loads run {self._residency.max_concurrent_loads} at a time, "
                "residency.max_concurrent_loads); retry, or raise the timeout"
            ) from None
        finally:
            self._cold_waiting -= 1
            self._cold_waiters[slot] -= 1
            if not self._cold_waiters[slot]:
                del self._cold_waiters[slot]
        assert loaded is not None  # a load is only given up when no request waits for it
        return loaded

    def _cold_done(self, slot: tuple[str, str], task: asyncio.Task[LoadedModel | None]) -> None:
        if self._cold.get(slot) is task:
            del self._cold[slot]
        if not task.cancelled():
            task.exception()  # retrieved: a load every waiter gave up on fails unawaited

    async def _cold_load(self, lazy: LazyModel, slot: tuple[str, str]) -> LoadedModel | None:
        async with self._load_slots:
            entry = self._entries.get(lazy.name, {}).get(lazy.version)
            if entry is not None and entry.state is ModelState.READY:
                return entry  # another request's load finished while this one waited for a slot
            if not self._cold_waiters.get(slot):
                # Every request for it gave up (deadline, disconnect) while it queued for a load slot:
                # loading it now would only evict a model that is in use. Out of the table in the same
                # step, so a request arriving next starts a load of its own.
                del self._cold[slot]
                self._residency_metrics.cold_abandoned.inc()
                return None
            started = time.perf_counter()
            entry = await self.load(lazy.config)
            self._residency_metrics.cold_load_s.observe(time.perf_counter() - started)
            return entry

    def _cold_retry_after_s(self) -> float:
        """About one load's time: the mean measured load of the artifacts loaded so far, else 1 s."""
        sessions = self._pool.sessions()
        if not sessions:
            return 1.0
        return max(0.1, sum(session.load_s for session in sessions) / len(sessions))

    async def load(self, config: ModelConfig) -> LoadedModel:
        """Load, verify and warm one model off the event loop (or attach it to the open session of an
        artifact with the same content); register it READY or raise."""
        pending = LoadingModel(name=config.name or config.ref or str(config.path), config=config)
        self._pending.append(pending)
        started = time.perf_counter()
        key: str | None = None
        batcher: Batcher | None = None
        entry: LoadedModel | None = None
        try:
            session, fresh, view, rss_before = await self._acquire(config)
            key = session.key
            pending.name, pending.version = view.name, view.version
            # Bound from here on: requests to a model still warming count under its own label.
            metrics = self._metrics.bind(view.name)
            warmup = WarmupObserver(metrics)
            batcher = _batcher(view.name, view, config, warmup)
            batcher.start()
            if fresh:
                await warm(batcher, view, config, warmup)
                metrics.add_warmup_runs(len(warmup.runs))
                await asyncio.to_thread(release_free_heap)
                self._measured(session, warmup, rss_before, time.perf_counter() - started)
            else:  # the session is warm: its first name's runs stand for this name's too
                warmup.warming = False
                warmup.runs = list(session.warmup_runs)
                batcher.seed(session.warmup_runs)
                self._share_runs(session, config, batcher)
            entry = LoadedModel(
                name=view.name,
                version=view.version,
                config=config,
                model=view,
                batcher=batcher,
                metrics=metrics,
                warmup=warmup,
                load_s=time.perf_counter() - started,
                demand=self._demand.setdefault(key, Demand()),
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
                if key is not None:
                    self._release(key)
                if not self._serves(pending.name):
                    self._metrics.release(pending.name)
        self._entries.setdefault(entry.name, {})[entry.version] = entry
        self._default.setdefault(entry.name, entry.version)
        self._users.setdefault(key, set()).add((entry.name, entry.version))
        if session.lane is not None:  # a second name joined while this one warmed
            entry.batcher.share_runs(session.lane)
        self._metrics.load_s.labels(entry.name, entry.version).set(entry.load_s)
        self._metrics.model_ready.labels(entry.name, entry.version).set(1)
        entry.metrics.count_load()
        if self._residency.lazy:
            await self._fit(0, protect=key)
        log.info("loaded %s version %s in %.2fs", entry.name, entry.version, entry.load_s)
        return entry

    async def _acquire(self, config: ModelConfig) -> tuple[Session, bool, NamedModel, int]:
        """The session for `config` (opened, or shared), whether it is fresh, this name's view of it,
        and the RSS before it was opened."""
        threads = self._threads(config)
        if self._opener is not None:
            opener = self._opener
            key = f"unshared-{next(self._unshared)}"
            rss_before = rss_bytes()
            session, fresh = await self._pool.acquire(key, lambda: opener(config))
            self._gauges()
            return session, fresh, named(session, session.model.name, session.model.version), rss_before
        path, registry_version = await asyncio.to_thread(self._resolver, config)
        key, manifest = await asyncio.to_thread(
            artifact_key, path, threads, config.length_grouping, config.prepack_weights
        )
        name = served_name(config) or manifest.name
        version = registry_version or manifest.version
        if self._residency.lazy and self._pool.get(key) is None:
            needed = self._sizes.get(key) or (path / manifest.model_file).stat().st_size
            await self._fit(needed, protect=None)
        rss_before = rss_bytes()
        session, fresh = await self._pool.acquire(
            key,
            lambda: load_model(
                path,
                intra_op_threads=threads,
                name=name,
                version=registry_version,
                length_grouping=config.length_grouping,
                prepack_weights=config.prepack_weights,
                spin_threads=self._spin_threads,
            ),
        )
        self._gauges()
        return session, fresh, named(session, name, version), rss_before

    def _share_runs(self, session: Session, config: ModelConfig, batcher: Batcher) -> None:
        """Put `batcher` and every other name's batcher on `session` on its one run queue: separate
        threads ran the names' batches at once on the one session (150 names: 80 of 100 requests/s
        served, p99 1.6 s; server/lanes.py)."""
        lane = session.shared_lane(config.instances)
        batcher.share_runs(lane)
        for name, version in self._users.get(session.key, set()):
            entry = self._entries.get(name, {}).get(version)
            if entry is not None:
                entry.batcher.share_runs(lane)

    def _measured(self, session: Session, warmup: WarmupObserver, rss_before: int, load_s: float) -> None:
        """Record what the first load of an artifact measured: RSS growth over open and warm-up (at least
        the model file's size: memory freed elsewhere meanwhile can hide a load's growth), load time."""
        session.size_bytes = max(rss_bytes() - rss_before, session.model.file_size_bytes)
        session.load_s = load_s
        session.warmup_runs = tuple(warmup.runs)
        self._sizes[session.key] = session.size_bytes
        self._loaded_at[session.key] = time.monotonic()
        self._gauges()

    async def _fit(self, incoming_bytes: int, protect: str | None) -> None:
        """Evict the least valuable artifacts until the loaded ones and `incoming_bytes` fit the budget."""
        budget = self._residency.memory_budget_bytes
        assert budget is not None
        now = time.monotonic()
        pinned = {name for name, versions in self._lazy.items() for lazy in versions.values() if lazy.pinned}
        residents = []
        for session in self._pool.sessions():
            users = self._users.get(session.key, set())
            entries = [self._entries.get(name, {}).get(version) for name, version in users]
            residents.append(
                Resident(
                    key=session.key,
                    size_bytes=session.size_bytes,
                    load_s=session.load_s,
                    demand=self._demand.setdefault(session.key, Demand()),
                    pinned=any(name in pinned for name, _ in users) or not users,
                    busy=session.key == protect or any(e is not None and e.batcher.busy for e in entries),
                )
            )
        for key in choose_evictions(
            residents, budget, incoming_bytes, now, self._residency.demand_half_life_s
        ):
            await self._evict(key, now)

    async def _evict(self, key: str, now: float) -> None:
        loaded_at = self._loaded_at.pop(key, now)
        for name, version in sorted(self._users.get(key, set())):
            await self.unload(name, version, keep_registered=True)
            self._metrics.for_model(name).count_eviction()
        self._residency_metrics.residency_age_s.observe(now - loaded_at)
        log.info("evicted artifact %s after %.1fs resident", key[:12], now - loaded_at)

    def set_default(self, name: str, version: str) -> None:
        """Point unversioned requests at `version` in one step (an atomic switch for clients)."""
        self.get(name, version)
        self._default[name] = version

    async def unload(
        self, name: str, version: str, drain_timeout_s: float = 30.0, keep_registered: bool = False
    ) -> None:
        """Stop serving `name` `version`; `keep_registered` (an eviction) leaves a lazy model to load
        again on its next request, with its metrics kept."""
        if not keep_registered:
            self._lazy.get(name, {}).pop(version, None)
            if not self._lazy.get(name):
                self._lazy.pop(name, None)
        if version not in self._entries.get(name, {}):
            if not self._serves(name):
                self._metrics.release(name)
            return  # a lazy model not loaded: nothing open to close
        entry = self._entries[name][version]
        entry.state = ModelState.UNLOADING
        # Out of the table first: a request arriving during the drain takes the cold path (a lazy name)
        # and may reacquire the session before it closes.
        del self._entries[name][version]
        if not self._entries[name]:
            del self._entries[name]
            self._default.pop(name, None)
        elif self._default.get(name) == version:
            self._default[name] = next(iter(self._entries[name]))
        await entry.batcher.drain(drain_timeout_s)
        await entry.batcher.close()
        self._users.get(entry.model.key, set()).discard((name, version))
        self._release(entry.model.key)
        if not self._serves(name):
            self._metrics.release(name)
        self._metrics.model_ready.labels(name, version).set(0)

    async def drain(self, timeout_s: float) -> None:
        for entry in self.loaded():
            await entry.batcher.drain(timeout_s)

    async def close(self) -> None:
        """Close every loaded model; a load still in progress is cancelled by its owner and cleans up itself."""
        for task in list(self._cold.values()):
            task.cancel()
        for entry in self.loaded():
            await entry.batcher.close()
        self._pool.close()
        self._entries.clear()
        self._gauges()

    def _release(self, key: str) -> None:
        if self._pool.release(key):
            self._users.pop(key, None)
        self._gauges()

    def _gauges(self) -> None:
        self._residency_metrics.resident_bytes.set(self._pool.resident_bytes())
        self._residency_metrics.sessions.set(len(self._pool))

    def _serves(self, name: str) -> bool:
        """True while a version of `name` is loaded, loading or registered to load lazily."""
        return (
            bool(self._entries.get(name))
            or bool(self._lazy.get(name))
            or any(entry.name == name for entry in self._pending)
        )

    def _threads(self, config: ModelConfig) -> int:
        return config.intra_op_threads or self._auto_intra_op_threads


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
