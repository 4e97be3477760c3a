"""The fleet router: one port, `/v2/...` for every model of the fleet.

A request for ``/v2/models/NAME/...`` goes to the ready replica serving NAME with the fewest requests
in flight, among those below their in-flight limit (``Upstream.max_in_flight``). Bodies and the headers
that matter (Content-Type, Content-Encoding, Inference-Header-Content-Length, Authorization,
X-Request-Timeout-Ms) pass through byte for byte.

Under load the router sheds instead of queueing: when every ready replica is at its limit the answer
is 503 with Retry-After at once. A replica that answers 503 with a ``retry_after_s`` (its admission
control: the time until its backlog has drained) is held for that model: the router sends it no
request for that model for that long (at most ``max_overload_hold_s``) and, when every ready replica is
held, answers 503 itself with the time left, instead of forwarding requests the replica has said it
will refuse (one hop instead of three, and no server CPU spent on refusals). An inference whose connection
fails, or that a replica answers 503 (overloaded, or not ready yet), is retried once on another replica (inference is a pure function of
its input, so a retry is safe) while the retry budget (``RetryBudget``: a share of recent requests)
lasts, so a failing replica cannot double the load. Every upstream call has a deadline: the router's
``request_timeout_s``, or the client's ``X-Request-Timeout-Ms`` when shorter (504 after it).
Readiness of each replica comes from polling its /v2/health/ready. While a model has a replica down (or
just back), a request that finds no room waits in the model's queue a short while (router_wait.py).

The router also answers: /v2/health/live, /v2/health/ready (every model has a ready replica),
/router/ready (the router itself can route, for Kubernetes probes), /v2 (metadata),
POST /v2/repository/index (the union of every group's index), /metrics (Prometheus) and
/fleet/status (JSON for `modelfleet fleet status`) and the dashboard under /ui (fleet/router_ui.py).

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
import math
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import orjson
from prometheus_client import generate_latest

from modelfleet import __version__
from modelfleet.errors import ModelfleetError
from modelfleet.fleet.router_canary import CanaryRoutes
from modelfleet.fleet.router_config import RouterSettings
from modelfleet.fleet.router_http import error_response, json_response, model_scope, refusal
from modelfleet.fleet.router_metrics import SHED_RETRY_BUDGET, RouterMetrics
from modelfleet.fleet.router_shed import no_replica
from modelfleet.fleet.router_ui import RouterDashboard
from modelfleet.fleet.router_wait import DegradedWaits, Waiting
from modelfleet.fleet.routing import Replica, RetryBudget, RoutingTable
from modelfleet.observe.tracing import tracer_for, with_traceparent
from modelfleet.observe.ui import is_ui_path
from modelfleet.protocol.wire import ModelState
from modelfleet.security.auth import (
    Authenticator,
    Authorizer,
    authorize_off_loop,
    credentials_from_headers,
)
from modelfleet.transport.client import (
    CONNECTION_ERROR,
    RESPONSE_TOO_LARGE,
    TIMEOUT,
    ClientLimits,
    ConnectionPool,
    FetchPool,
    Origin,
)
from modelfleet.transport.server import Answer, internal_error
from modelfleet.transport.wire import Request, Response, encode_request

_MODELS_PREFIX = "/v2/models/"
_CONNECT_TIMEOUT_S = 2.0
_DEADLINE_HEADER = b"x-request-timeout-ms"
_RETRY_WINDOW_S = 10.0
_RETRY_SLOTS = 10
# Every this many health polls the router reads a ready replica's repository index, to learn which lazy
# models it has loaded (routing prefers those); 3,000 models make an index of ~250 KB.
_INDEX_EVERY_POLLS = 5
# A replica's 503 body is parsed for retry_after_s only up to this size (ours are ~200 bytes).
_MAX_HOLD_BODY_BYTES = 4096
# While degraded, a request refused by a window (no hold to wait out) looks again after this long.
_DEGRADED_POLL_S = 0.01
_now = time.monotonic


class Router:
    """Routing, health polling and the router's own endpoints. ``handle`` is the whole request path."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.table = RoutingTable(settings.upstreams)
        self.metrics = RouterMetrics(settings.fleet, self.table, settings.latency_buckets_s)
        self.auth: Authorizer | None = (
            None if settings.keys_file is None else Authenticator.from_keys_file(settings.keys_file)
        )
        self._connect_timeout_s = min(_CONNECT_TIMEOUT_S, settings.request_timeout_s)
        self._limits = limits = ClientLimits(max_response_bytes=settings.max_upstream_response_bytes)
        # Per replica: the hot path's pool (its cap is the replica's in-flight limit, so it never queues)
        # and a small one for health polls and the repository index, which must not wait behind inferences.
        self.pools: dict[str, ConnectionPool] = {}
        self.control_pools: dict[str, FetchPool] = {}
        self._hosts: dict[str, bytes] = {}
        for replica in self.table.replicas:
            parts = urlsplit(replica.url)
            if parts.scheme != "http" or parts.hostname is None or parts.port is None:
                raise ValueError(f"upstream {replica.name}: URL {replica.url!r} must be http://HOST:PORT")
            origin = Origin(parts.hostname, parts.port)
            self.pools[replica.name] = self._hot_pool(origin, replica.limit)
            self.control_pools[replica.name] = FetchPool(origin, 2, self._connect_timeout_s, limits)
            self._hosts[replica.name] = origin.host_header
        self.budget = RetryBudget(
            settings.retry_budget_percent, settings.retry_budget_min_per_s, _RETRY_WINDOW_S, _RETRY_SLOTS
        )
        self._budget_timer: asyncio.TimerHandle | None = None
        self._polled = 0
        self._pollers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Response]] = set()
        self._retry_after = settings.retry_after_s
        self._timeout_s = settings.request_timeout_s
        self._max_hold_s = settings.max_overload_hold_s
        self._waits = DegradedWaits(
            self.table,
            self.budget,
            self.metrics.retried,
            _now,
            settings.max_degraded_wait_s,
            _DEGRADED_POLL_S,
        )
        self.canary = CanaryRoutes(
            settings.fleet,
            settings.split_file,
            set(self.table.by_model),
            self.pools,
            self.control_pools,
            self._hosts,
            self._hot_pool,
            lambda replica: self._poll(replica, counted=True),
            settings.health_interval_s,
            settings.request_timeout_s,
            limits,
        )
        # Both empty unless a rollout runs: the hot path pays one falsy check for each.
        self._splits = self.canary.splits
        self._shadow_waiting = self.canary.waiting
        self._draw = random.random
        self.metrics.registry.register(self.canary)
        self._tracing = tracer_for(settings.tracing, "modelfleet-router")
        self.dashboard = (
            RouterDashboard(settings, self.table, self.status, self.control_pools, self._hosts, self.auth)
            if settings.ui.enabled
            else None
        )

    def _hot_pool(self, origin: Origin, limit: int) -> ConnectionPool:
        return ConnectionPool(
            origin, limit, self._upstream_done, self._connect_timeout_s, self._limits, keep_responses=True
        )

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._pollers = [asyncio.create_task(self._poll(replica)) for replica in self.table.replicas]
        self._tick_budget()
        self.canary.start()

    def _tick_budget(self) -> None:
        self.budget.tick()
        every_s = _RETRY_WINDOW_S / _RETRY_SLOTS
        self._budget_timer = asyncio.get_running_loop().call_later(every_s, self._tick_budget)

    async def stop(self) -> None:
        if self._budget_timer is not None:
            self._budget_timer.cancel()
        self._waits.close()
        for task in self._pollers:
            task.cancel()
        for task in self._pollers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.canary.stop()
        for pool in [*self.pools.values(), *self.control_pools.values()]:
            await pool.close()
        if self._tracing is not None:
            await asyncio.to_thread(self._tracing.shutdown)

    @property
    def polled_all_once(self) -> bool:
        return self._polled >= len(self.table.replicas)

    async def _poll(self, replica: Replica, counted: bool = False) -> None:
        """Poll ``replica``'s readiness forever; the first answer counts toward ``polled_all_once``
        unless ``counted`` (a canary's polls do not: it is not in the routing table)."""
        pool = self.control_pools[replica.name]
        request = encode_request(b"GET", b"/v2/health/ready", self._hosts[replica.name], [], b"")
        timeout_s = max(0.5, min(2.0, self.settings.health_interval_s * 2))
        # GET, which a modelfleet server answers like POST: a read, not an inference to count or refuse.
        index = encode_request(b"GET", b"/v2/repository/index", self._hosts[replica.name], [], b"")
        polls = 0
        read_index = True
        while True:
            status, _ = await pool.fetch(request, timeout_s)
            replica.set_ready(status == 200, _now(), polled=True)
            polls += 1
            if read_index and replica.ready and polls % _INDEX_EVERY_POLLS == 1:  # which models it has loaded
                status, response = await pool.fetch(index, timeout_s)
                if status == 200 and response is not None:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        replica.note_index(orjson.loads(response.body))
                # Refused (auth on: the router holds no key) or not offered: ask once, not every few seconds.
                read_index = not 400 <= status < 500
            if not counted:
                counted = True
                self._polled += 1
            await asyncio.sleep(self.settings.health_interval_s)

    # requests -------------------------------------------------------------------------------------

    def dispatch(self, request: Request, answer: Answer) -> Response | None:
        """The whole request path: a response now, or None and ``answer`` later (transport.server.Dispatcher)."""
        path = request.path
        if path.startswith(_MODELS_PREFIX):
            model = path[len(_MODELS_PREFIX) :].split("/", 1)[0]
            if self.table.has_model(model) and request.method != b"HEAD":
                return self._start_forward(request, model, answer)
            return self._guarded(
                request, answer, model_scope(path, model), lambda: self._no_model_route(request, model)
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
            if self.dashboard is not None and is_ui_path(path):
                self.dashboard.handle(request, answer)
                return None
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
        return {
            "fleet": self.settings.fleet,
            "ready": self.table.fleet_ready(),
            "models": models,
            "splits": self.canary.status(),
        }

    def _start_forward(self, request: Request, model: str, answer: Answer) -> Response | None:
        """Deadline from the router's timeout and the client's X-Request-Timeout-Ms, then the first send."""
        started = _now()
        timeout_s = self._timeout_s
        header = request.header(_DEADLINE_HEADER)
        if header is not None:
            try:
                client_ms = int(header)
            except ValueError:
                client_ms = 0
            if client_ms <= 0:
                message = "X-Request-Timeout-Ms must be a positive whole number of milliseconds"
                return self._answered(model, started, error_response(400, message))
            timeout_s = min(timeout_s, client_ms / 1000.0)
        self.budget.requests += 1
        replica = None
        if self._splits and (split := self._splits.get(model)) is not None:
            if split.to_canary(self._draw()):
                replica = split.choose()  # None (no ready canary): the fleet's own replicas take it
            elif split.shadow_percent > 0 and split.to_shadow(self._draw()):
                self.canary.mirror(request, split)
        if replica is None and not (self._waits.queues and self._waits.waiting(model)):
            replica = self.table.choose(model, now=started)
        deadline = started + timeout_s
        if replica is None:
            if self._wait(request, model, answer, started, deadline, timeout_s, started, resend=False):
                return None
            return self._answered(model, started, self._unavailable(model, None, "", started))
        self._send(request, model, answer, started, deadline, timeout_s, replica, None)
        return None

    def _wait(
        self,
        request: Request,
        model: str,
        answer: Answer,
        started: float,
        deadline: float,
        timeout_s: float,
        now: float,
        resend: bool,
    ) -> bool:
        """Whether ``request``, which found no ready replica with room (``resend``: one refused it as
        overloaded), waits on the router for one (router_wait.py: only while a replica of ``model`` is
        down, for at most max_degraded_wait_s from its arrival and never past its deadline)."""

        def send(replica: Replica) -> None:
            self._send(request, model, answer, started, deadline, timeout_s, replica, None)

        def refuse(budget_spent: bool) -> None:
            response = (
                self._budget_spent(model, "it waited for room")
                if budget_spent
                else self._unavailable(model, None, "", _now())
            )
            answer(self._answered(model, started, response))

        give_up_at = min(started + self._waits.max_wait_s, deadline)
        return self._waits.wait(model, Waiting(send, refuse, give_up_at, resend), now)

    def _send(
        self,
        request: Request,
        model: str,
        answer: Answer,
        started: float,
        deadline: float,
        timeout_s: float,
        replica: Replica,
        failed: Replica | None,
    ) -> None:
        """Send on ``replica``'s pool; the token carries the request's state to ``_upstream_done``."""
        headers = request.headers
        if self._tracing is not None:  # this attempt's span is the replica's parent
            parent = self._tracing.attempt(id(request), request.header(b"traceparent"), model, replica.name)
            headers = with_traceparent(headers, parent)
        data = encode_request(
            request.method, request.target, self._hosts[replica.name], headers, request.body
        )
        replica.sent(model)
        token = (request, model, answer, started, deadline, timeout_s, replica, failed)
        self.pools[replica.name].submit(data, token, deadline)

    def _unavailable(self, model: str, failed: Replica | None, failure: str, now: float) -> Response:
        """503 when no replica can take the request: none ready, every ready one at its limit or held."""
        message, held_s = no_replica(self.table, self.metrics, model, f" ({failure})" if failed else "", now)
        if held_s is not None:
            body = {"error": message, "retry_after_s": round(held_s, 4)}
            return json_response(503, body, max(1, math.ceil(held_s)))
        return error_response(503, message, self._retry_after)

    def _hold(self, replica: Replica, model: str, request: Request, response: Response, now: float) -> bool:
        """Whether a 503 is the replica's admission control refusing ``model`` (it carries retry_after_s);
        if so, hold ``model`` on ``replica`` for that long (at most max_overload_hold_s).

        Not for a request that carried its own X-Request-Timeout-Ms: a refusal for a short deadline says
        nothing about requests with the model's own timeout.
        """
        if len(response.body) > _MAX_HOLD_BODY_BYTES or request.header(_DEADLINE_HEADER) is not None:
            return False
        try:
            document = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return False
        retry_s = document.get("retry_after_s") if isinstance(document, dict) else None
        if not isinstance(retry_s, int | float) or isinstance(retry_s, bool) or retry_s <= 0:
            return False
        if self._max_hold_s > 0:
            self.table.hold(replica, model, now + min(float(retry_s), self._max_hold_s))
        return True

    def _upstream_done(
        self, token: Any, written_at: float, finished_at: float, status: int, response: Response | None
    ) -> None:
        request, model, answer, started, deadline, timeout_s, replica, failed = token
        # The pool's own clock reading at the answer (time.monotonic, as _now): no second read per request.
        refused = (
            response is not None
            and response.status == 503
            and self._hold(replica, model, request, response, finished_at)
        )
        replica.finished(model, refused, finished_at)
        if self._waits.queues:  # a slot is free: the oldest waiter of the model takes it
            self._waits.drain(model)
        if self._tracing is not None:
            self._tracing.attempt_done(id(request), response.status if response is not None else status)
        if self._splits and (split := self._splits.get(model)) is not None:
            # Every attempt counts for its version, so a canary's failure shows even when a retry hides it.
            code = response.status if response is not None else 504 if status == TIMEOUT else 502
            split.arm(replica).observe(code, finished_at - written_at)
        try:
            outcome = self._after_upstream(
                request, model, answer, started, deadline, timeout_s, replica, failed, status, response
            )
        except Exception as bug:  # a bug must cost one request, never leave the client waiting
            outcome = internal_error(bug)
        if outcome is not None:
            answer(outcome)

    def _after_upstream(
        self,
        request: Request,
        model: str,
        answer: Answer,
        started: float,
        deadline: float,
        timeout_s: float,
        replica: Replica,
        failed: Replica | None,
        status: int,
        response: Response | None,
    ) -> Response | None:
        if response is not None:
            if status == 503 and failed is None:
                # An overloaded (or not yet ready) replica: once more elsewhere, within the budget.
                now = _now()
                other = self.table.choose(model, exclude=replica, now=now)
                if other is not None and self.budget.try_retry():
                    self.metrics.retried(model)
                    self._send(request, model, answer, started, deadline, timeout_s, other, replica)
                    return None
                if self._wait(request, model, answer, started, deadline, timeout_s, now, resend=True):
                    return None  # no room elsewhere, or no budget: degraded, it waits for both
            return self._answered(model, started, response, request)
        if status == TIMEOUT:
            message = (
                f"model {model!r}: no answer from {replica.name} within {timeout_s:g} s "
                "(router request_timeout_s, or the client's X-Request-Timeout-Ms)"
            )
            return self._answered(model, started, error_response(504, message))
        if status == RESPONSE_TOO_LARGE:
            limit = self.settings.max_upstream_response_bytes
            message = (
                f"model {model!r}: {replica.name} answered more than {limit} bytes "
                "(router max_upstream_response_bytes)"
            )
            return self._answered(model, started, error_response(502, message))
        if status != CONNECTION_ERROR:
            raise AssertionError(f"unknown upstream outcome {status}")
        # Refused, reset or closed mid-answer: the replica is gone or going. Polls bring it back.
        replica.set_ready(False, _now())
        failure = f"{replica.name} failed: connection refused, reset or closed"
        if failed is not None:
            message = f"model {model!r}: {failure}, and so did {failed.name}; retry shortly"
            return self._answered(model, started, error_response(503, message, self._retry_after))
        now = _now()
        other = self.table.choose(model, exclude=replica, now=now)
        if other is None:
            return self._answered(model, started, self._unavailable(model, replica, failure, now))
        if not self.budget.try_retry():
            return self._answered(model, started, self._budget_spent(model, failure))
        self.metrics.retried(model)
        self._send(request, model, answer, started, deadline, timeout_s, other, replica)
        return None

    def _budget_spent(self, model: str, why: str) -> Response:
        self.metrics.shed(model, SHED_RETRY_BUDGET)
        message = (
            f"model {model!r}: {why}; not retried, the retry budget is spent "
            "(router retry_budget_percent, retry_budget_min_per_s); retry shortly"
        )
        return error_response(503, message, self._retry_after)

    def _answered(
        self, model: str, started: float, response: Response, request: Request | None = None
    ) -> Response:
        self.metrics.observe(model, response.status, _now() - started)
        if self._shadow_waiting and request is not None:
            self.canary.answered(request, response.status, response.body)
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
            data = encode_request(
                b"POST", b"/v2/repository/index", self._hosts[replica.name], request.headers, request.body
            )
            status, response = await self.control_pools[replica.name].fetch(data, self._timeout_s)
            if status != 200 or response is None:
                continue
            try:
                listing = orjson.loads(response.body)
            except orjson.JSONDecodeError:
                continue
            for entry in listing if isinstance(listing, list) else []:
                if isinstance(entry, dict) and "name" in entry:
                    entries[(str(entry["name"]), str(entry.get("version", "")))] = entry
                    answered.add(str(entry["name"]))
        for model in self.table.by_model:
            if model not in answered:
                entries[(model, "")] = {
                    "name": model,
                    "state": ModelState.UNAVAILABLE,
                    "reason": "no ready replica",
                }
        return json_response(200, list(entries.values()))
