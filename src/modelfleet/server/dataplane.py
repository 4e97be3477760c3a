"""Protocol-neutral inference: validate against the model's tensor specs, batch, run, select outputs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from modelfleet import __version__
from modelfleet.config.serve import ModelConfig
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound, Unavailable
from modelfleet.observe.timing import InferTiming
from modelfleet.protocol.codec import InferRequest, InferResponse
from modelfleet.protocol.wire import ModelMetadata, ModelState, RepositoryIndexEntry, ServerMetadata
from modelfleet.server.drift import ServedDrift
from modelfleet.server.metrics import ServerMetrics
from modelfleet.server.openapi import openapi_document
from modelfleet.server.repository import LoadedModel, ModelRepository, request_budget_s
from modelfleet.types import Arrays, TensorSpec

log = logging.getLogger("modelfleet.server")
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "health", "metadata"]


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        models: list[ModelConfig],
        registry_enabled: bool = False,
        peers_ready: Callable[[], bool] | None = None,
    ) -> None:
        """`peers_ready`: whether the other worker processes sharing this port have loaded their models
        too (the pod is ready only when every one has); None for a server of one process."""
        self.repository = repository
        self._configs = models
        self._registry_enabled = registry_enabled
        # Served name → the config it was loaded from, so an unloaded model can be loaded again.
        self._known: dict[str, ModelConfig] = {}
        self.draining = False
        self.load_error: ModelfleetError | None = None
        self._loading: asyncio.Task[None] | None = None
        self._peers_ready = peers_ready
        self.drift = ServedDrift()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, on_fatal: Callable[[ModelfleetError], None] | None = None) -> None:
        """Begin loading every configured model in the background; the server is live meanwhile."""
        self._loading = asyncio.get_running_loop().create_task(self._load_all(on_fatal))

    async def _load_all(self, on_fatal: Callable[[ModelfleetError], None] | None) -> None:
        for config in self._configs:
            try:
                name = await self.repository.add(config)
                self._known[name] = config
                entry = self.repository.resident(name)  # None: a lazy model, prepared at its first request
                if entry is not None:
                    self.drift.prepare(entry)  # a reference file that does not fit fails the load
            except ModelfleetError as exc:
                self.load_error = exc
                if on_fatal is not None:
                    on_fatal(exc)  # the owner reports it (the CLI prints one line)
                else:
                    log.error("%s", exc.message)
                return

    async def wait_loaded(self) -> None:
        if self._loading is not None:
            await self._loading

    @property
    def loading(self) -> bool:
        """True until the models of the spec have been loaded (or failed to)."""
        return self._loading is None or not self._loading.done()

    def _entry(self, name: str, version: str | None, ready: bool = False) -> LoadedModel:
        # A served name is only known once its artifact is open, so while the spec is still loading
        # an unknown name may be one that is about to appear: answer "retry" (503), not "no such model".
        try:
            return self.repository.ready_entry(name, version) if ready else self.repository.get(name, version)
        except NotFound:
            if self.loading and self.load_error is None:
                raise Unavailable(
                    f"model '{name}' is not available yet: the server is still loading its models",
                    retry_after_s=1.0,
                ) from None
            raise

    async def _serving(self, name: str, version: str | None, client_budget_s: float | None) -> LoadedModel:
        """The entry for a request; a lazy model not loaded is loaded first (residency), within the
        request's deadline."""
        if self.repository.is_lazy(name):
            return await self.repository.serving(name, version, client_budget_s)
        return self._entry(name, version, ready=True)

    async def shutdown(self, drain_timeout_s: float) -> None:
        self.draining = True
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()  # the model being loaded closes what it opened
            await asyncio.gather(self._loading, return_exceptions=True)
        await self.repository.drain(drain_timeout_s)
        await self.repository.close()
        self.drift.close()

    # -- health and metadata --------------------------------------------------------------------
    def ready(self) -> bool:
        return (
            not self.draining
            and not self.loading
            and self.load_error is None
            and self.repository.all_ready()
            and (self._peers_ready is None or self._peers_ready())
        )

    def server_metadata(self) -> ServerMetadata:
        return {"name": "modelfleet", "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        lazy = self.repository.lazy_metadata(name, version)
        if lazy is not None:
            return lazy
        entry = self._entry(name, version)
        model = entry.model
        return {
            "name": entry.name,
            "versions": [entry.version],
            "platform": model.platform,
            "inputs": [spec.to_json() for spec in model.inputs],  # type: ignore[misc]
            "outputs": [spec.to_json() for spec in model.outputs],  # type: ignore[misc]
            "parameters": {
                "sha256": model.sha256,
                "max_batch_size": entry.config.batching.max_batch_size,
                "state": entry.state,
            },
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the V2 routes, with a concrete infer path for each loaded model."""
        return openapi_document(
            [(entry.name, list(entry.model.inputs)) for entry in self.repository.loaded()]
        )

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            return self._entry(name, version).state is ModelState.READY
        except Unavailable:
            return False

    def repository_index(self) -> list[RepositoryIndexEntry]:
        return [
            {"name": entry.name, "version": entry.version, "state": entry.state, "reason": entry.reason}
            for entry in self.repository.entries()
        ]

    # -- repository extension (admin) -------------------------------------------------------------
    async def load_model(self, name: str, parameters: dict[str, object]) -> None:
        """Load `name` from the spec, or from the registry (`parameters.version` / `parameters.alias`)."""
        if self.repository.has(name):
            return
        config = self._known.get(name)
        if config is None:
            if not self._registry_enabled:
                raise NotFound(f"model '{name}' is not in this server's spec and no registry is configured")
            version, alias = parameters.get("version"), parameters.get("alias")
            ref = f"{name}:{version}" if version else f"{name}@{alias}" if alias else name
            config = ModelConfig(ref=ref)
        entry = await self.repository.load(config)
        self._known[entry.name] = config
        self.drift.prepare(entry)

    async def unload_model(self, name: str, drain_timeout_s: float) -> None:
        for version in self.repository.versions(name):
            await self.repository.unload(name, version, drain_timeout_s)

    # -- inference ------------------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        timeout_s: float | None = None,
        timing: InferTiming | None = None,
        impatient: bool = False,
    ) -> InferResponse:
        """Run one request. Its deadline is the shortest of the model's `timeout_s`, the V2
        `parameters.timeout` and `timeout_s` (the caller's, e.g. the X-Request-Timeout-Ms header);
        `timing` (tracing on) receives the times of its batch; `impatient`: see `Batcher.submit`."""
        arrived = asyncio.get_running_loop().time()  # a cold request's wait for its load counts too
        client_budget_s = min(
            (budget for budget in (request.timeout_s(), timeout_s) if budget is not None), default=None
        )
        entry = await self._serving(name, version, client_budget_s)
        self.repository.touch(entry)
        inputs, items = _validate_inputs(entry, request)
        if request.outputs is not None:
            known = {spec.name for spec in entry.model.outputs}
            unknown = [output.name for output in request.outputs if output.name not in known]
            if unknown:
                raise InvalidInput(
                    f"model '{entry.name}' has no output {unknown[0]!r}; it has {sorted(known)}"
                )
        deadline = arrived + request_budget_s(entry.config, client_budget_s)
        outputs = await entry.batcher.submit(inputs, items, deadline, timing, impatient)
        self.drift.offer(entry, request.inputs, outputs, items)
        if request.outputs is not None:
            outputs = {output.name: outputs[output.name] for output in request.outputs}
        return InferResponse(entry.name, entry.version, outputs, request.id)

    async def drift_document(
        self, name: str, version: str | None, metrics: ServerMetrics, window: bool, reference: bool
    ) -> dict[str, Any]:
        """GET /v2/models/{name}/drift: this replica's drift window and its own assessment."""
        entry = self._entry(name, version, ready=True)
        if not entry.config.drift.sampling:
            why = "drift.sensitive" if entry.config.drift.sensitive else "drift.sample_rate 0"
            return {
                "model": entry.name,
                "version": entry.version,
                "sampling": False,
                "reason": f"sampling is off ({why})",
            }
        tracker = self.drift.tracker(entry) or self.drift.track(entry)
        return await tracker.document(metrics, window, reference)


def _validate_inputs(entry: LoadedModel, request: InferRequest) -> tuple[Arrays, int]:
    model = entry.model
    specs = {spec.name: spec for spec in model.inputs}
    given = {tensor.name: tensor for tensor in request.inputs}
    missing = [name for name, spec in specs.items() if name not in given and not spec.optional]
    if missing:
        raise InvalidInput(
            f"model '{entry.name}' needs input {missing[0]!r}; it takes {_describe(specs.values())}"
        )
    extra = [name for name in given if name not in specs]
    if extra:
        raise InvalidInput(
            f"model '{entry.name}' has no input {extra[0]!r}; it takes {_describe(specs.values())}"
        )
    items = -1
    first_name = ""
    limit = entry.config.batching.items_per_request_limit()
    arrays: Arrays = {}
    for name, spec in specs.items():
        if name not in given:  # an optional input left out
            continue
        tensor = given[name]
        if tensor.datatype is not spec.datatype:
            raise InvalidInput(f"input '{name}' must be {spec.datatype.value}, got {tensor.datatype.value}")
        if not spec.accepts_shape(tensor.shape):
            raise InvalidInput(
                f"input '{name}' must have shape {list(spec.shape)} (-1 = any), got {list(tensor.shape)}"
            )
        if not tensor.shape or tensor.shape[0] < 1:
            raise InvalidInput(f"input '{name}' must hold at least one item along the first dimension")
        if items not in (-1, tensor.shape[0]):
            raise InvalidInput(
                f"input '{name}' holds {tensor.shape[0]} items but '{first_name}' holds {items}: "
                "all inputs must have the same first (batch) dimension"
            )
        items, first_name = tensor.shape[0], first_name or name
        if items > limit:
            raise InvalidInput(
                f"input '{name}' holds {items} items, over the limit of {limit} items per request "
                f"(model batching.max_items_per_request)"
            )
        arrays[name] = tensor.data
    # The model checks and prepares its own inputs (text: UTF-8, cut to what the tokenizer keeps) here,
    # per request, so a bad one fails alone instead of failing the batch it would have joined.
    return model.validate_inputs(arrays), items


def _describe(specs: Iterable[TensorSpec]) -> str:
    return ", ".join(f"{spec.name} {spec.datatype.value}{list(spec.shape)}" for spec in specs)
