"""The router's canary routes: it watches the split file and runs the canary upstreams it names.

The split file (``RouterSettings.split_file``, a ``TrafficSplit``) is polled every ``health_interval_s``
by its size and modification time, so a rollout changes weights by rewriting one file, locally (the
fleet's state folder) and on Kubernetes (a ConfigMap key the kubelet updates in the mounted folder),
and a router with several replicas picks the change up in every replica without an admin call to each.
A bad file is logged and ignored: the router keeps the split it had.

Canary replicas get the same hot-path pools as the fleet's own, inserted into the router's pool and host
tables, so forwarding is unchanged; they are health-polled like any replica and are never in the routing
table, so nothing but the split sends them traffic. Shadow requests go through the replica's awaited pool and
a task each (they are a sampled share), and are paired with the client's answer by request identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from modelfleet.errors import ModelfleetError
from modelfleet.fleet.buckets import LATENCY_BUCKETS_S
from modelfleet.fleet.router_config import CanaryRoute, read_traffic_split
from modelfleet.fleet.routing import Replica
from modelfleet.fleet.shadow import compare_answers
from modelfleet.fleet.split import Split
from modelfleet.transport.client import ClientLimits, ConnectionPool, FetchPool, Origin
from modelfleet.transport.wire import Request, encode_request

log = logging.getLogger("modelfleet.router")

_BOUND_LABELS = [*(repr(float(bound)) for bound in LATENCY_BUCKETS_S), "+Inf"]


class CanaryRoutes(Collector):
    """Splits by model, their canary replicas and pools; reloads the split file when it changes."""

    def __init__(
        self,
        fleet: str,
        split_file: Path | None,
        models: set[str],
        pools: dict[str, ConnectionPool],
        control_pools: dict[str, FetchPool],
        hosts: dict[str, bytes],
        make_pool: Callable[[Origin, int], ConnectionPool],
        poll: Callable[[Replica], Coroutine[Any, Any, None]],
        interval_s: float,
        timeout_s: float,
        limits: ClientLimits,
    ) -> None:
        self.fleet = fleet
        self.splits: dict[str, Split] = {}
        # id(request) → future for the client's answer body, while a shadow copy of it is in flight.
        self.waiting: dict[int, asyncio.Future[bytes | None]] = {}
        self._file = split_file
        self._models = models
        self._pools, self._control_pools, self._hosts = pools, control_pools, hosts
        self._make_pool, self._poll = make_pool, poll
        self._interval_s, self._timeout_s, self._limits = interval_s, timeout_s, limits
        self._replicas: dict[str, Replica] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._seen: tuple[int, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._file is not None:
            self.reload()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        tasks = [*self._pollers.values(), *self._tasks, *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.reload()

    def reload(self) -> None:
        """Apply the split file if it changed since the last look (size and mtime)."""
        assert self._file is not None
        try:
            stat = self._file.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            seen = (0, 0)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            split = read_traffic_split(self._file)
        except ModelfleetError as exc:
            log.error("traffic split %s ignored, the previous split stays: %s", self._file, exc.message)
            return
        try:
            self.apply([route for route in split.routes if route.model in self._models])
        except ValueError as exc:  # an upstream URL the router cannot use: keep what routes now
            log.error("traffic split %s ignored, the previous split stays: %s", self._file, exc)

    def apply(self, routes: list[CanaryRoute]) -> None:
        wanted: dict[str, Replica] = {}
        for route in routes:
            for upstream in route.upstreams:
                replica = self._replicas.get(upstream.name)
                if replica is None or replica.url != upstream.url.rstrip("/"):
                    replica = self._add_replica(Replica(upstream))
                replica.limit = upstream.max_in_flight
                wanted[upstream.name] = replica
        splits: dict[str, Split] = {}
        for route in routes:
            replicas = [wanted[upstream.name] for upstream in route.upstreams]
            current = self.splits.get(route.model)
            if current is not None and current.canary_version == route.canary_version:
                current.update(route, replicas)  # same rollout: its figures carry on
                splits[route.model] = current
            else:
                splits[route.model] = Split(route, replicas)
        self.splits.clear()
        self.splits.update(splits)  # the router holds this dict: update in place
        for name in [name for name in self._replicas if name not in wanted]:
            self._remove_replica(name)

    def _add_replica(self, replica: Replica) -> Replica:
        parts = urlsplit(replica.url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"canary upstream {replica.name}: URL {replica.url!r} must be http://HOST:PORT")
        if replica.name in self._replicas:
            self._remove_replica(replica.name)
        origin = Origin(parts.hostname, parts.port)
        self._pools[replica.name] = self._make_pool(origin, replica.limit)
        self._hosts[replica.name] = origin.host_header
        # Health polls and shadow copies share one awaited pool, apart from the hot path's.
        self._control_pools[replica.name] = FetchPool(
            origin, replica.limit, min(2.0, self._timeout_s), self._limits
        )
        self._replicas[replica.name] = replica
        self._pollers[replica.name] = asyncio.get_running_loop().create_task(self._poll(replica))
        return replica

    def _remove_replica(self, name: str) -> None:
        self._replicas.pop(name)
        self._pollers.pop(name).cancel()
        pool = self._pools.pop(name)
        control = self._control_pools.pop(name)
        self._hosts.pop(name, None)
        # Requests already sent finish on the old pool: close it once they cannot be waiting any longer.
        self._later(self._close_after([pool, control], self._timeout_s + 1.0))

    async def _close_after(self, pools: list[ConnectionPool], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        for pool in pools:
            await pool.close()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # requests -------------------------------------------------------------------------------------

    def mirror(self, request: Request, split: Split) -> None:
        """Send a copy of ``request`` to a canary replica; its answer is compared, never returned."""
        replica = split.choose()
        if replica is None or split.shadow.in_flight >= replica.limit or id(request) in self.waiting:
            split.shadow.skipped += 1
            return
        split.shadow.mirrored += 1
        split.shadow.in_flight += 1
        primary: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.waiting[id(request)] = primary
        self._later(self._shadow(request, split, replica, primary))

    async def _shadow(
        self, request: Request, split: Split, replica: Replica, primary: asyncio.Future[bytes | None]
    ) -> None:
        figures = split.shadow
        try:
            data = encode_request(
                request.method, request.target, self._hosts[replica.name], request.headers, request.body
            )
            status, response = await self._control_pools[replica.name].fetch(data, self._timeout_s)
            try:
                answer = await asyncio.wait_for(asyncio.shield(primary), self._timeout_s)
            except TimeoutError:
                answer = None
            if answer is None:
                figures.not_comparable += 1  # the client's own request failed: nothing to compare with
                return
            if status != 200 or response is None:
                figures.failed += 1
                return
            comparison = compare_answers(answer, response.body)
            if comparison is None:
                figures.not_comparable += 1
                return
            figures.compared += 1
            if comparison.label_agreement is not None:
                figures.labels_compared += 1
                figures.agreement_sum += comparison.label_agreement
            if comparison.cosine_mean is not None and comparison.cosine_min is not None:
                figures.vectors_compared += comparison.rows
                figures.cosine_sum += comparison.cosine_mean * comparison.rows
                if figures.cosine_min is None or comparison.cosine_min < figures.cosine_min:
                    figures.cosine_min = comparison.cosine_min
        finally:
            figures.in_flight -= 1
            self.waiting.pop(id(request), None)

    def answered(self, request: Request, status: int, body: bytes) -> None:
        """The client's answer to a mirrored request (only called while ``waiting`` is not empty)."""
        future = self.waiting.pop(id(request), None)
        if future is not None and not future.done():
            future.set_result(body if status == 200 else None)

    # reading --------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {model: split.snapshot() for model, split in self.splits.items()}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "modelfleet_router_version_requests",
            "Upstream attempts of a model under rollout by version (baseline or canary) and HTTP status.",
            labels=["fleet", "model", "version", "role", "code"],
        )
        duration = HistogramMetricFamily(
            "modelfleet_router_version_request_duration_seconds",
            "Upstream latency of a model under rollout, per version.",
            labels=["fleet", "model", "version", "role"],
        )
        for model, split in sorted(self.splits.items()):
            for role, version, figures in (
                ("baseline", split.baseline_version, split.baseline),
                ("canary", split.canary_version, split.canary),
            ):
                labels = [self.fleet, model, version, role]
                for code, count in sorted(figures.by_status.items()):
                    requests.add_metric([*labels, str(code)], count)
                buckets = list(zip(_BOUND_LABELS, figures.cumulative(), strict=True))
                duration.add_metric(labels, buckets, figures.sum_s)
        yield requests
        yield duration
