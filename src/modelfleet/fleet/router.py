"""The fleet router: one port, `/v2/...` for every model of the fleet.

A request for ``/v2/models/NAME/...`` goes to the ready replica serving NAME with the fewest requests
in flight. Bodies and the headers that matter (Content-Type, Content-Encoding,
Inference-Header-Content-Length, Authorization) pass through byte for byte. An inference whose
connection fails is retried once on another replica (inference is a pure function of its input, so a
retry is safe); with no ready replica the answer is 503 with Retry-After, and every upstream call has
a deadline (504 after it). Readiness of each replica comes from polling its /v2/health/ready.

The router also answers: /v2/health/live, /v2/health/ready (every model has a ready replica),
/router/ready (the router itself can route, for Kubernetes probes), /v2 (metadata),
POST /v2/repository/index (the union of every group's index), /metrics (Prometheus) and
/fleet/status (JSON for `modelfleet fleet status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelfleet import __version__
from modelfleet.fleet.http1 import (
    Request,
    Response,
    ServerProtocol,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    encode_request,
)
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.fleet.routing import Replica, RoutingTable, quantile_from_buckets

# Finer at the low end than a server's buckets: the router's own cost lives below a millisecond.
LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
_JSON_HEADERS = [(b"Content-Type", b"application/json")]
_MODELS_PREFIX = "/v2/models/"
_CONNECT_TIMEOUT_S = 2.0
_DRAIN_TIMEOUT_S = 10.0


def json_response(status: int, data: Any, retry_after_s: int | None = None) -> Response:
    headers = list(_JSON_HEADERS)
    if retry_after_s is not None:
        headers.append((b"Retry-After", str(retry_after_s).encode()))
    return Response(status, headers, orjson.dumps(data))


def error_response(status: int, message: str, retry_after_s: int | None = None) -> Response:
    return json_response(status, {"error": message}, retry_after_s)


class _TableCollector(Collector):
    """Gauges read from the routing table at scrape time, so the hot path never touches them."""

    def __init__(self, fleet: str, table: RoutingTable) -> None:
        self.fleet = fleet
        self.table = table

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "modelfleet_router_ready_replicas", "Ready replicas per model.", labels=["fleet", "model"]
        )
        for model in self.table.by_model:
            ready.add_metric([self.fleet, model], self.table.ready_replicas(model))
        yield ready
        outstanding = GaugeMetricFamily(
            "modelfleet_router_outstanding_requests",
            "Requests in flight per upstream.",
            labels=["fleet", "upstream"],
        )
        up = GaugeMetricFamily(
            "modelfleet_router_upstream_ready",
            "1 when the upstream answers ready.",
            labels=["fleet", "upstream"],
        )
        for replica in self.table.replicas:
            outstanding.add_metric([self.fleet, replica.name], replica.outstanding)
            up.add_metric([self.fleet, replica.name], 1 if replica.ready else 0)
        yield outstanding
        yield up


class RouterMetrics:
    """The router's own Prometheus metrics, in a private registry (no global state)."""

    def __init__(self, fleet: str, table: RoutingTable) -> None:
        self.fleet = fleet
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelfleet_router_requests",
            "Requests through the router by model and HTTP status.",
            ["fleet", "model", "code"],
            registry=self.registry,
        )
        self.duration_s = Histogram(
            "modelfleet_router_request_duration_seconds",
            "Time from request parsed to response ready, per model.",
            ["fleet", "model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.retries = Counter(
            "modelfleet_router_retries",
            "Requests retried on another replica after a connection failure.",
            ["fleet", "model"],
            registry=self.registry,
        )
        self.registry.register(_TableCollector(fleet, table))
        # Children bound once per label set: the hot path does one dict lookup per figure.
        self._request_children: dict[tuple[str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}

    def observe(self, model: str, status: int, elapsed_s: float) -> None:
        key = (model, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(self.fleet, model, str(status))
        child.inc()
        duration = self._duration_children.get(model)
        if duration is None:
            duration = self._duration_children[model] = self.duration_s.labels(self.fleet, model)
        duration.observe(elapsed_s)

    def model_figures(self, model: str) -> dict[str, Any]:
        """Counts by status, retries and latency quantiles of one model, for `fleet status`."""
        by_status: dict[str, int] = {}
        for sample in next(iter(self.requests.collect())).samples:
            if sample.name.endswith("_total") and sample.labels["model"] == model:
                by_status[sample.labels["code"]] = int(sample.value)
        retries = sum(
            int(s.value)
            for s in next(iter(self.retries.collect())).samples
            if s.name.endswith("_total") and s.labels["model"] == model
        )
        bounds: list[float] = []
        cumulative: list[float] = []
        for sample in next(iter(self.duration_s.collect())).samples:
            if sample.name.endswith("_bucket") and sample.labels["model"] == model:
                bounds.append(float(sample.labels["le"]))
                cumulative.append(sample.value)
        figures: dict[str, Any] = {
            "requests": sum(by_status.values()),
            "errors": sum(count for code, count in by_status.items() if code.startswith("5")),
            "by_status": dict(sorted(by_status.items())),
            "retries": retries,
        }
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            value = quantile_from_buckets(q, bounds, cumulative)
            figures[name] = None if value is None else round(value * 1000, 3)
        return figures


class Router:
    """Routing, health polling and the router's own endpoints. ``handle`` is the whole request path."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.table = RoutingTable(settings.upstreams)
        self.metrics = RouterMetrics(settings.fleet, self.table)
        self.pools: dict[str, UpstreamPool] = {}
        for replica in self.table.replicas:
            parts = urlsplit(replica.url)
            if parts.scheme != "http" or parts.hostname is None or parts.port is None:
                raise ValueError(f"upstream {replica.name}: URL {replica.url!r} must be http://HOST:PORT")
            self.pools[replica.name] = UpstreamPool(parts.hostname, parts.port)
        self._polled = 0
        self._pollers: list[asyncio.Task[None]] = []
        self._retry_after = settings.retry_after_s
        self._timeout_s = settings.request_timeout_s
        self._connect_timeout_s = min(_CONNECT_TIMEOUT_S, settings.request_timeout_s)

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._pollers = [asyncio.create_task(self._poll(replica)) for replica in self.table.replicas]

    async def stop(self) -> None:
        for task in self._pollers:
            task.cancel()
        for task in self._pollers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pool in self.pools.values():
            pool.close()

    @property
    def polled_all_once(self) -> bool:
        return self._polled >= len(self.table.replicas)

    async def _poll(self, replica: Replica) -> None:
        pool = self.pools[replica.name]
        request = encode_request(b"GET", b"/v2/health/ready", pool.host_header, [], b"")
        timeout_s = max(0.5, min(2.0, self.settings.health_interval_s * 2))
        counted = False
        while True:
            try:
                response = await pool.request(request, timeout_s, self._connect_timeout_s)
                replica.ready = response.status == 200
            except (UpstreamError, UpstreamTimeout, OSError):
                replica.ready = False
            if not counted:
                counted = True
                self._polled += 1
            await asyncio.sleep(self.settings.health_interval_s)

    # requests -------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith(_MODELS_PREFIX):
            started = time.perf_counter()
            model = path[len(_MODELS_PREFIX) :].split("/", 1)[0]
            if not self.table.has_model(model):
                return error_response(404, f"model {model!r} is not in fleet {self.settings.fleet!r}")
            response = await self._forward(request, model)
            self.metrics.observe(model, response.status, time.perf_counter() - started)
            return response
        method = request.method
        if method in (b"GET", b"HEAD"):
            if path == "/v2/health/live":
                return json_response(200, {"live": True})
            if path == "/v2/health/ready":
                return self._fleet_ready()
            if path == "/router/ready":
                if self.polled_all_once:
                    return json_response(200, {"ready": True})
                return error_response(503, "router has not polled its upstreams yet", self._retry_after)
            if path == "/v2":
                return json_response(
                    200,
                    {
                        "name": f"modelfleet-router/{self.settings.fleet}",
                        "version": __version__,
                        "extensions": ["binary_tensor_data"],
                    },
                )
            if path == "/metrics":
                return Response(
                    200,
                    [(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")],
                    generate_latest(self.metrics.registry),
                )
            if path == "/fleet/status":
                return json_response(200, self.status())
        if method == b"POST" and path == "/v2/repository/index":
            return await self._repository_index(request)
        return error_response(404, f"no route {method.decode('latin-1')} {path} (the router serves /v2/...)")

    def _fleet_ready(self) -> Response:
        if self.table.fleet_ready():
            return json_response(200, {"ready": True})
        missing = ", ".join(self.table.not_ready_models())
        return json_response(
            503, {"ready": False, "error": f"no ready replica for: {missing}"}, self._retry_after
        )

    def status(self) -> dict[str, Any]:
        models = {}
        for model, replicas in self.table.by_model.items():
            models[model] = {
                "ready_replicas": sum(1 for r in replicas if r.ready),
                "replicas": [
                    {"name": r.name, "url": r.url, "ready": r.ready, "outstanding": r.outstanding}
                    for r in replicas
                ],
                **self.metrics.model_figures(model),
            }
        return {"fleet": self.settings.fleet, "ready": self.table.fleet_ready(), "models": models}

    async def _forward(self, request: Request, model: str) -> Response:
        if request.method == b"HEAD":
            return error_response(405, "HEAD is not supported on model routes; use GET")
        failed: Replica | None = None
        failure = ""
        data: bytes | None = None
        for _attempt in range(2):
            replica = self.table.choose(model, exclude=failed)
            if replica is None:
                after = f" ({failure})" if failed is not None else ""
                return error_response(
                    503, f"model {model!r}: no ready replica{after}; retry shortly", self._retry_after
                )
            pool = self.pools[replica.name]
            if data is None:
                data = encode_request(
                    request.method, request.target, pool.host_header, request.headers, request.body
                )
            replica.outstanding += 1
            try:
                return await pool.request(data, self._timeout_s, self._connect_timeout_s)
            except (UpstreamError, OSError) as exc:
                # Refused, reset or closed mid-answer: the replica is gone or going. Polls bring it back.
                replica.ready = False
                failed = replica
                failure = f"{replica.name} failed: {exc or type(exc).__name__}"
                self.metrics.retries.labels(self.settings.fleet, model).inc()
            except UpstreamTimeout:
                return error_response(
                    504, f"model {model!r}: no answer from {replica.name} within {self._timeout_s:g} s"
                )
            finally:
                replica.outstanding -= 1
        return error_response(
            503, f"model {model!r}: {failure}, and the retry failed too; retry shortly", self._retry_after
        )

    async def _repository_index(self, request: Request) -> Response:
        """The union of every group's index; models without a ready replica are listed as UNAVAILABLE."""
        entries: dict[tuple[str, str], Any] = {}
        answered: set[str] = set()
        asked: set[str] = set()
        for replica in self.table.replicas:
            if not replica.ready or replica.group in asked:
                continue
            asked.add(replica.group)
            pool = self.pools[replica.name]
            data = encode_request(
                b"POST", b"/v2/repository/index", pool.host_header, request.headers, request.body
            )
            try:
                response = await pool.request(data, self._timeout_s, self._connect_timeout_s)
                listing = orjson.loads(response.body) if response.status == 200 else []
            except (UpstreamError, UpstreamTimeout, OSError, orjson.JSONDecodeError):
                continue
            for entry in listing if isinstance(listing, list) else []:
                if isinstance(entry, dict) and "name" in entry:
                    entries[(str(entry["name"]), str(entry.get("version", "")))] = entry
                    answered.add(str(entry["name"]))
        for model in self.table.by_model:
            if model not in answered:
                entries[(model, "")] = {"name": model, "state": "UNAVAILABLE", "reason": "no ready replica"}
        return json_response(200, list(entries.values()))


async def serve_router(
    settings: RouterSettings, stop: asyncio.Event | None = None, on_listening: Any = None
) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives; then stop accepting and finish what is in flight."""
    router = Router(settings)
    loop = asyncio.get_running_loop()
    connections: set[ServerProtocol] = set()
    server = await loop.create_server(
        lambda: ServerProtocol(router.handle, settings.max_body_bytes, connections),
        settings.host,
        settings.port,
        backlog=2048,
        reuse_address=True,
    )
    router.start()
    if on_listening is not None:
        on_listening(server.sockets[0].getsockname()[1])
    stop_event = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop_event.set)
    try:
        await stop_event.wait()
    finally:
        server.close()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            for connection in list(connections):
                connection.close_if_idle()
            if not connections:
                break
            await asyncio.sleep(0.05)
        await router.stop()


def run_router(settings: RouterSettings) -> None:
    """Blocking entry point for `modelfleet fleet router`: uvloop when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve_router(settings))
    else:
        uvloop.run(serve_router(settings))
