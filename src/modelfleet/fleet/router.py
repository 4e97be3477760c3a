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

With auth on (``settings.keys_file``), what the router answers itself follows the servers' policy and
is checked by the same Authenticator (security.auth): /v2, the repository index, /fleet/status and, with
``protect_metrics``, /metrics need a key with the ``read`` scope; a request for a model the fleet does
not serve (or a HEAD on a model route) is checked as the server would check that route before its
404/405, so no answer tells a caller without a key which models exist. A missing or bad key gets 401
``{"error": ...}`` with ``WWW-Authenticate``, a key without the scope 403. The probes (/v2/health/live,
/v2/health/ready, /router/ready) stay open. Model routes are checked by the servers behind the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import generate_latest

from modelfleet import __version__
from modelfleet.errors import ModelfleetError, Unauthorized
from modelfleet.fleet.http1 import (
    Answer,
    Request,
    Response,
    ServerProtocol,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
    encode_request,
    internal_error,
)
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.fleet.router_metrics import RouterMetrics
from modelfleet.fleet.routing import Replica, RoutingTable
from modelfleet.security.auth import (
    WWW_AUTHENTICATE,
    Authenticator,
    Authorizer,
    authorize_off_loop,
    credentials_from_headers,
)

_JSON_HEADERS = [(b"Content-Type", b"application/json")]
_MODELS_PREFIX = "/v2/models/"
_CONNECT_TIMEOUT_S = 2.0
_DRAIN_TIMEOUT_S = 10.0
_CHALLENGE = WWW_AUTHENTICATE.encode()


def json_response(status: int, data: Any, retry_after_s: int | None = None) -> Response:
    headers = list(_JSON_HEADERS)
    if retry_after_s is not None:
        headers.append((b"Retry-After", str(retry_after_s).encode()))
    return Response(status, headers, orjson.dumps(data))


def error_response(status: int, message: str, retry_after_s: int | None = None) -> Response:
    return json_response(status, {"error": message}, retry_after_s)


def refusal(exc: ModelfleetError) -> Response:
    """401 (with the challenge, as the servers send it), 403 or 400 for a request the auth check refused."""
    response = error_response(exc.http_status, exc.message)
    if isinstance(exc, Unauthorized):
        response.headers.append((b"WWW-Authenticate", _CHALLENGE))
    return response


def _model_scope(path: str, model: str) -> str:
    """The scope a server would ask of this model route: ``infer:<model>`` for /infer, else ``read``."""
    return f"infer:{model}" if path.rstrip("/").endswith("/infer") else "read"


class Router:
    """Routing, health polling and the router's own endpoints. ``handle`` is the whole request path."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.table = RoutingTable(settings.upstreams)
        self.metrics = RouterMetrics(settings.fleet, self.table)
        self.auth: Authorizer | None = (
            None if settings.keys_file is None else Authenticator.from_keys_file(settings.keys_file)
        )
        self.pools: dict[str, UpstreamPool] = {}
        for replica in self.table.replicas:
            parts = urlsplit(replica.url)
            if parts.scheme != "http" or parts.hostname is None or parts.port is None:
                raise ValueError(f"upstream {replica.name}: URL {replica.url!r} must be http://HOST:PORT")
            self.pools[replica.name] = UpstreamPool(parts.hostname, parts.port)
        self._polled = 0
        self._pollers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Response]] = set()
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

    def dispatch(self, request: Request, answer: Answer) -> Response | None:
        """The whole request path: a response now, or None and ``answer`` later (see http1.Dispatcher)."""
        path = request.path
        if path.startswith(_MODELS_PREFIX):
            model = path[len(_MODELS_PREFIX) :].split("/", 1)[0]
            if self.table.has_model(model) and request.method != b"HEAD":
                return self._forward(request, model, answer, time.perf_counter(), None, "")
            return self._guarded(
                request, answer, _model_scope(path, model), lambda: self._no_model_route(request, model)
            )
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
                return self._guarded(request, answer, "read", self._metadata)
            if path == "/metrics":
                if not self.settings.protect_metrics:
                    return self._metrics_text()
                return self._guarded(request, answer, "read", self._metrics_text)
            if path == "/fleet/status":
                return self._guarded(request, answer, "read", lambda: json_response(200, self.status()))
        if method == b"POST" and path == "/v2/repository/index":
            self._later(self._repository_index(request), answer)
            return None
        return error_response(404, f"no route {method.decode('latin-1')} {path} (the router serves /v2/...)")

    def _guarded(
        self, request: Request, answer: Answer, scope: str, respond: Callable[[], Response]
    ) -> Response | None:
        """``respond()`` for a caller allowed ``scope``: at once while auth is off, else after the key check."""
        if self.auth is None:
            return respond()
        self._later(self._checked(request, scope, respond), answer)
        return None

    async def _checked(self, request: Request, scope: str, respond: Callable[[], Response]) -> Response:
        denied = await self._refused(request, scope)
        return respond() if denied is None else denied

    async def _refused(self, request: Request, scope: str) -> Response | None:
        """None when auth is off or the request's key grants ``scope``, else the 401/403 to answer."""
        if self.auth is None:
            return None
        authorization, api_key = request.header(b"authorization"), request.header(b"x-api-key")
        credentials = credentials_from_headers(
            None if authorization is None else authorization.decode("latin-1"),
            None if api_key is None else api_key.decode("latin-1"),
        )
        try:
            await authorize_off_loop(self.auth, credentials, scope)
        except ModelfleetError as exc:  # Unauthorized, Forbidden; InvalidInput for a name no scope can hold
            return refusal(exc)
        return None

    def _later(self, work: Coroutine[Any, Any, Response], answer: Answer) -> None:
        """Run ``work`` as a task and ``answer`` with its response (dispatch then returns None)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._answer_from_task(done, answer))

    def _no_model_route(self, request: Request, model: str) -> Response:
        if not self.table.has_model(model):
            return error_response(404, f"model {model!r} is not in fleet {self.settings.fleet!r}")
        return error_response(405, "HEAD is not supported on model routes; use GET")

    def _metadata(self) -> Response:
        return json_response(
            200,
            {
                "name": f"modelfleet-router/{self.settings.fleet}",
                "version": __version__,
                "extensions": ["binary_tensor_data"],
            },
        )

    def _metrics_text(self) -> Response:
        return Response(
            200,
            [(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")],
            generate_latest(self.metrics.registry),
        )

    def _answer_from_task(self, task: asyncio.Task[Response], answer: Answer) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            answer(error_response(503, "the router is shutting down", self._retry_after))
        elif (exc := task.exception()) is not None:
            answer(internal_error(exc))
        else:
            answer(task.result())

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

    def _forward(
        self,
        request: Request,
        model: str,
        answer: Answer,
        started: float,
        failed: Replica | None,
        failure: str,
    ) -> Response | None:
        """Send to the ready replica with the fewest requests in flight; once more elsewhere if it fails."""
        replica = self.table.choose(model, exclude=failed)
        if replica is None:
            after = f" ({failure})" if failed is not None else ""
            message = f"model {model!r}: no ready replica{after}; retry shortly"
            return self._answered(model, started, error_response(503, message, self._retry_after))
        pool = self.pools[replica.name]
        data = encode_request(request.method, request.target, pool.host_header, request.headers, request.body)
        replica.outstanding += 1

        def done(response: Response | None, exc: BaseException | None) -> None:
            replica.outstanding -= 1
            try:
                outcome = self._after_upstream(
                    request, model, answer, started, replica, failed, response, exc
                )
            except Exception as bug:  # a bug must cost one request, never leave the client waiting
                outcome = internal_error(bug)
            if outcome is not None:
                answer(outcome)

        pool.send(data, self._timeout_s, self._connect_timeout_s, done)
        return None

    def _after_upstream(
        self,
        request: Request,
        model: str,
        answer: Answer,
        started: float,
        replica: Replica,
        failed: Replica | None,
        response: Response | None,
        exc: BaseException | None,
    ) -> Response | None:
        if exc is None:
            assert response is not None
            return self._answered(model, started, response)
        if isinstance(exc, UpstreamTimeout):
            message = f"model {model!r}: no answer from {replica.name} within {self._timeout_s:g} s"
            return self._answered(model, started, error_response(504, message))
        if not isinstance(exc, UpstreamError | OSError):
            raise exc
        # Refused, reset or closed mid-answer: the replica is gone or going. Polls bring it back.
        replica.ready = False
        self.metrics.retried(model)
        failure = f"{replica.name} failed: {exc or type(exc).__name__}"
        if failed is not None:
            message = f"model {model!r}: {failure}, and the retry failed too; retry shortly"
            return self._answered(model, started, error_response(503, message, self._retry_after))
        return self._forward(request, model, answer, started, replica, failure)

    def _answered(self, model: str, started: float, response: Response) -> Response:
        self.metrics.observe(model, response.status, time.perf_counter() - started)
        return response

    async def _repository_index(self, request: Request) -> Response:
        """The union of every group's index; models without a ready replica are listed as UNAVAILABLE."""
        denied = await self._refused(request, "read")
        if denied is not None:
            return denied
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
        lambda: ServerProtocol(router.dispatch, settings.max_body_bytes, connections),
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
