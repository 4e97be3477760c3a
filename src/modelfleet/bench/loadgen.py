"""The load generator of one process: open and closed loops on one event loop, recorded into HDR histograms.

Open loop: a timer fires at each intended send time (from `arrivals`), sends every request that is due
and re-arms for the next one; each response also sends whatever is already overdue, so a burst of
responses cannot hold sends back. A slow response never delays a send; latency counts from the intended
send time (coordinated-omission corrected) and, separately, from the moment the request was written.
A send that leaves more than ``late_send_threshold_s`` after its intended time is late: the generator
fell behind, and a point with too many late sends is invalid. A send that had to wait because every
allowed connection was busy is *capped*: the target fell behind, and the corrected latency shows it.

Closed loop: ``concurrency`` users, each sending its next request the moment the previous one ends,
or, after a 503 that asks for a retry later, once that wait is over (``retry_wait_s``): a closed loop
that resends a refusal at once measures a refusal storm (seen: 56,337 refusals against 148 answers a
second from 64 users of an overloaded MiniLM), not the target.

Statistics: requests sent during ramp and warm-up are not measured. Measured responses go into
per-window histograms by completion time (see `windows`), so memory stays flat however long the point runs.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import math
import random
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import psutil

from modelfleet.bench import stats
from modelfleet.bench.arrivals import ArrivalSchedule
from modelfleet.bench.plan import GeneratorPlan, Hooks, PointPlan, ProgressSnapshot
from modelfleet.bench.results import EndpointRaw, GeneratorInfo, PointRaw
from modelfleet.bench.windows import LatencyWindows
from modelfleet.heap import keep_freed_memory
from modelfleet.transport.client import OUTCOMES, QUEUED_AT_CAP, ConnectionPool, Origin
from modelfleet.transport.wire import Response

if TYPE_CHECKING:
    from modelfleet.bench.grpc_target import GrpcPool

_now = time.monotonic
_HEARTBEAT_S = 0.1
# Event-loop timers have 1 ms resolution (uvloop rounds to whole ms; a shorter wait becomes a busy
# spin). So a tick sends what is due within half a millisecond and never waits less than 1 ms; a send
# that leaves early has its latency counted from the actual send, so it is never understated.
_EARLY_S = 0.0005
_MIN_WAIT_S = 0.001
# A response also sends what is overdue by at least this much, so a burst of responses that keeps
# the loop busy cannot hold sends back until the next timer. Sending only what is overdue (rather
# than whatever falls due soon) keeps sends in batches: the target wakes once per batch instead of
# once per request, which on loopback saves both sides CPU per request (figures in docs/bench.md).
_CATCH_UP_S = 0.00025
_PROGRESS_EVERY_S = 0.5
# Connections opened before a point starts (see ConnectionPool.prewarm): enough for the open loop's
# peak rate at this latency per request, and never fewer than a handful. More open on demand.
_PREWARM_LATENCY_S = 0.01
_PREWARM_MIN = 8


def outcome_kind(status: int) -> str:
    outcome = OUTCOMES.get(status)
    return outcome if outcome is not None else f"http_{status}"


class _PointRun:
    def __init__(
        self, plan: GeneratorPlan, point: PointPlan, hooks: Hooks, csv: TextIO | None, run_start: float
    ) -> None:
        self.plan = plan
        self.point = point
        self.hooks = hooks
        self.csv = csv
        self.run_start = run_start
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(plan.seed * 1_000_003 + plan.proc_index * 7919 + point.index)
        endpoints = plan.endpoints
        self.requests = [e.requests for e in endpoints]
        self.cursor = [self.rng.randrange(len(e.requests)) for e in endpoints]
        cumulative, total = [], 0.0
        for endpoint in endpoints:
            total += endpoint.weight
            cumulative.append(total)
        self.cum_weights, self.total_weight = cumulative, total
        self.cycle_next = plan.proc_index
        cap = point.concurrency if point.loop == "closed" and point.concurrency else plan.max_in_flight
        pools: dict[Origin, ConnectionPool | GrpcPool] = {}
        for endpoint in endpoints:
            if endpoint.origin not in pools and endpoint.grpc_metadata is not None:
                # Imported only for gRPC targets: it registers Triton's protos in protobuf's default pool.
                from modelfleet.bench.grpc_target import GrpcPool

                pools[endpoint.origin] = GrpcPool(
                    endpoint.origin, cap, self._on_done, min(plan.timeout_s, 10.0), endpoint.grpc_metadata
                )
            elif endpoint.origin not in pools:
                pools[endpoint.origin] = ConnectionPool(
                    endpoint.origin,
                    cap,
                    self._on_done,
                    min(plan.timeout_s, 10.0),
                    keep_refusals=point.loop == "closed" and plan.max_retry_wait_s is not None,
                )
        self.pools = pools
        self.pool_of = [pools[e.origin] for e in endpoints]
        # timeline
        self.start = 0.0
        self.measure_start = 0.0
        self.send_end: float | None = None
        self.stopping = False
        self.stop_reason = "duration"
        self.done: asyncio.Future[None] = self.loop.create_future()
        # counters
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.scheduled = self.sent = self.ok = self.late = self.capped = self.warmup_requests = 0
        self.errors: dict[int, int] = {}
        self.last_finished = 0.0
        count = len(endpoints)
        self.ep_sent, self.ep_ok, self.ep_sum_s = [0] * count, [0] * count, [0.0] * count
        self.ep_errors: list[dict[int, int]] = [{} for _ in range(count)]
        self.latency = LatencyWindows(
            self.loop,
            plan.window_s,
            plan.stability_windows,
            count if plan.track_endpoints else 0,
            self._check_until_stable,
        )
        self.cpu_start: float | None = None
        self.last_progress = 0.0
        self.schedule: ArrivalSchedule | None = None
        self.send_limit: float | None = None
        self.next_due = 0.0
        self.measured_limit = point.requests

    # --- choosing what to send --------------------------------------------------------------------

    def _pick(self) -> int:
        if len(self.cum_weights) == 1:
            return 0
        if self.point.picker == "cycle":
            index = self.cycle_next % len(self.cum_weights)
            self.cycle_next += self.plan.procs
            return index
        return bisect.bisect_right(self.cum_weights, self.rng.random() * self.total_weight)

    def _dispatch(self, intended: float, now: float) -> None:
        endpoint = self._pick()
        if endpoint >= len(self.requests):  # float rounding at the top of the cumulative weights
            endpoint = len(self.requests) - 1
        requests = self.requests[endpoint]
        position = self.cursor[endpoint]
        self.cursor[endpoint] = position + 1
        request = requests[position % len(requests)]
        measured = intended >= self.measure_start
        if measured:
            self.sent += 1
            self.ep_sent[endpoint] += 1
            if now - intended > self.plan.late_send_threshold_s:
                self.late += 1
        else:
            self.warmup_requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight_seen:
            self.max_in_flight_seen = self.in_flight
        code = self.pool_of[endpoint].submit(request, (endpoint, intended), intended + self.plan.timeout_s)
        if code == QUEUED_AT_CAP and measured:
            self.capped += 1
        if measured and self.measured_limit is not None and self.sent >= self.measured_limit:
            self.stop_reason = "requests"
            self._stop_sending()

    # --- completions ------------------------------------------------------------------------------

    def _on_done(
        self, token: Any, written_at: float, finished: float, status: int, response: Response | None
    ) -> None:
        endpoint, intended = token
        self.in_flight -= 1
        if intended >= self.measure_start:
            self._record(endpoint, intended, written_at, finished, status)
        if self.csv is not None:
            self._write_row(endpoint, intended, written_at, finished, status)
        if self.stopping:
            if self.in_flight == 0 and not self.done.done():
                self.done.set_result(None)
        elif self.schedule is None:  # closed loop: this user sends its next request now
            if status == 503 and response is not None and self.plan.max_retry_wait_s is not None:
                wait_s = retry_wait_s(response, self.plan.max_retry_wait_s)
                if wait_s > 0:
                    self.loop.call_later(wait_s, self._start_user)
                    return
            self._dispatch(finished, finished)
        elif self.next_due <= finished - _CATCH_UP_S:
            self._send_due(finished)

    def _record(
        self, endpoint: int, intended: float, written_at: float, finished: float, status: int
    ) -> None:
        window = int((finished - self.measure_start) / self.plan.window_s)
        if window != self.latency.index:
            self.latency.roll_to(window)
        if finished > self.last_finished:
            self.last_finished = finished
        if 200 <= status < 300:
            self.ok += 1
            began = intended if intended < written_at else written_at  # an early send counts from its send
            self.latency.ok(
                int((finished - began) * 1_000_000.0) + 1,
                int((finished - written_at) * 1_000_000.0) + 1,
                endpoint,
            )
            self.ep_ok[endpoint] += 1
            self.ep_sum_s[endpoint] += finished - began
        else:
            self.errors[status] = self.errors.get(status, 0) + 1
            self.latency.error()
            errors = self.ep_errors[endpoint]
            errors[status] = errors.get(status, 0) + 1

    def _write_row(
        self, endpoint: int, intended: float, written_at: float, finished: float, status: int
    ) -> None:
        assert self.csv is not None
        base = self.run_start
        written = f"{written_at - base:.6f}" if written_at else ""
        service = f"{(finished - written_at) * 1000:.3f}" if written_at else ""
        ok = 200 <= status < 300
        self.csv.write(
            f"{self.point.index},{self.plan.proc_index},{self.plan.endpoints[endpoint].name},"
            f"{int(intended >= self.measure_start)},{intended - base:.6f},{written},{finished - base:.6f},"
            f"{(finished - intended) * 1000:.3f},{service},{status if status > 0 else ''},"
            f"{'ok' if ok else outcome_kind(status)}\n"
        )

    def _check_until_stable(self) -> None:
        point = self.point
        if (
            point.duration_s is not None
            or point.requests is not None
            or self.stopping
            or not self.hooks.leader
        ):
            return
        verdict = stats.check_stability(
            self.latency.recent_rates,
            self.latency.recent_p99_ms,
            self.plan.stability_windows,
            self.plan.stability_tolerance,
        )
        if verdict.stable:
            self.stop_reason = "stable"
            self.hooks.announce_stop(point.index)
            self._stop_sending()

    # --- sending ----------------------------------------------------------------------------------

    def _stop_sending(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.send_end = _now()
        if self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)

    def _send_end_limit(self) -> float | None:
        point = self.point
        if point.duration_s is not None:
            return self.measure_start + point.duration_s
        if point.requests is None:
            return self.measure_start + self.plan.max_windows * self.plan.window_s
        return None

    def _tick(self) -> None:
        """Open loop: send everything that is due, then sleep until the next intended time."""
        if self.stopping or not self._send_due(_now()):
            return
        wait = self.next_due - _now()
        self.loop.call_later(wait if wait > _MIN_WAIT_S else _MIN_WAIT_S, self._tick)

    def _send_due(self, now: float) -> bool:
        """Send every request due by ``now``; False once the point has stopped sending.

        Called from the timer and also after each response: when a burst of responses keeps the loop
        busy past a send's time, the send goes out between two of them instead of after the burst.
        """
        assert self.schedule is not None
        limit = self.send_limit
        while self.next_due <= now + _EARLY_S:
            due = self.next_due
            if limit is not None and due >= limit:
                self.stop_reason = "duration" if self.point.duration_s is not None else "max_windows"
                self._stop_sending()
                self.send_end = limit
                return False
            if due >= self.measure_start:
                self.scheduled += 1
            self._dispatch(due, now)
            if self.stopping:
                return False
            self.next_due = self.start + self.schedule.next()
            now = _now()
        return True

    def _start_open(self) -> None:
        point = self.point
        assert point.rate_per_s is not None
        phase = self.plan.proc_index / self.plan.procs if point.arrival == "constant" else 0.0
        self.schedule = ArrivalSchedule(
            point.rate_per_s, point.arrival == "poisson", self.rng, point.ramp_s, point.from_rate_per_s, phase
        )
        self.next_due = self.start + self.schedule.next()
        self.send_limit = self._send_end_limit()
        self._tick()

    def _start_closed(self) -> None:
        users = self.point.concurrency or 1
        for user in range(users):
            delay = self.point.ramp_s * user / users
            if delay <= 0:
                now = _now()
                self._dispatch(now, now)
            else:
                self.loop.call_later(delay, self._start_user)
        limit = self._send_end_limit()
        if limit is not None:
            self.loop.call_later(limit - _now(), self._end_by_time)

    def _start_user(self) -> None:
        if not self.stopping:
            now = _now()
            self._dispatch(now, now)

    def _end_by_time(self) -> None:
        if not self.stopping:
            self.stop_reason = "duration" if self.point.duration_s is not None else "max_windows"
            self._stop_sending()

    # --- housekeeping -----------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        if self.done.done():
            return
        now = _now()
        if self.cpu_start is None and now >= self.measure_start:
            self.cpu_start = _cpu_s()
        if not self.stopping and not self.hooks.leader and self.hooks.stop_requested(self.point.index):
            self.stop_reason = "stable"
            self._stop_sending()
        if self.hooks.progress is not None and now - self.last_progress >= _PROGRESS_EVERY_S:
            self.last_progress = now
            self.hooks.progress(self._snapshot(now))
        self.loop.call_later(_HEARTBEAT_S, self._heartbeat)

    def _snapshot(self, now: float) -> ProgressSnapshot:
        phase = "warmup" if now < self.measure_start else ("drain" if self.stopping else "measure")
        return ProgressSnapshot(
            proc=self.plan.proc_index,
            point_index=self.point.index,
            point_label=self.point.label,
            phase=phase,
            elapsed_s=now - self.start,
            sent=self.sent + self.warmup_requests,
            ok=self.ok,
            errors=sum(self.errors.values()),
            in_flight=self.in_flight,
            window_rate_per_s=self.latency.recent_rates[-1] if self.latency.recent_rates else None,
            window_p99_ms=self.latency.recent_p99_ms[-1] if self.latency.recent_p99_ms else None,
        )

    def _connections_needed(self, origin: Origin) -> int:
        """How many connections the pool for ``origin`` opens before the point starts: its share (by
        endpoint weight) of the closed loop's users, or of what the open loop's peak rate keeps in
        flight at ``_PREWARM_LATENCY_S`` per request."""
        point = self.point
        share = sum(e.weight for e in self.plan.endpoints if e.origin == origin) / self.total_weight
        if point.loop == "closed":
            return math.ceil((point.concurrency or 1) * share)
        peak_rate = max(point.rate_per_s or 0.0, point.from_rate_per_s)
        return max(_PREWARM_MIN, math.ceil(peak_rate * share * _PREWARM_LATENCY_S))

    async def run(self) -> PointRaw:
        point = self.point
        await asyncio.gather(
            *(pool.prewarm(self._connections_needed(origin)) for origin, pool in self.pools.items())
        )
        self.start = _now()
        self.measure_start = self.start + point.ramp_s + point.warmup_s
        if self.measure_start <= self.start:
            self.cpu_start = _cpu_s()
        self._heartbeat()
        if point.loop == "open":
            self._start_open()
        else:
            self._start_closed()
        await self.done
        for pool in self.pools.values():
            await pool.close()
        return self._finish()

    def _endpoint_histogram(self, number: int) -> str | None:
        if not self.plan.track_endpoints or not self.ep_ok[number]:
            return None
        histograms = self.latency.endpoint_histograms
        if histograms is None:  # the only endpoint: its latencies are the point's
            return stats.encode(self.latency.total_corrected)
        return stats.encode(histograms[number])

    def _finish(self) -> PointRaw:
        send_end = self.send_end if self.send_end is not None else _now()
        end = max(send_end, self.last_finished)
        measured_s = max(end - self.measure_start, 0.0)
        if measured_s > 0:
            # A completion exactly on the end boundary may already have opened the next window.
            last_index = max(int(measured_s / self.plan.window_s - 1e-9), self.latency.index)
            self.latency.roll_to(last_index)
            self.latency.close(max(measured_s - last_index * self.plan.window_s, 0.0))
        self.latency.finish()
        cpu_s = _cpu_s() - (self.cpu_start if self.cpu_start is not None else _cpu_s())
        cpu_wall = end - max(self.measure_start, self.start)
        generator = GeneratorInfo(
            host=self.plan.host,
            proc=self.plan.proc_index,
            cpu_percent=round(100.0 * cpu_s / cpu_wall, 1) if cpu_wall > 0 else 0.0,
            max_in_flight_seen=self.max_in_flight_seen,
        )
        return PointRaw(
            index=self.point.index,
            label=self.point.label,
            loop=self.point.loop,
            arrival=self.point.arrival,
            target_rate_per_s=self.point.rate_per_s,
            concurrency=self.point.concurrency,
            started_offset_s=self.start - self.run_start,
            warmup_s=self.point.ramp_s + self.point.warmup_s,
            send_s=max(send_end - self.measure_start, 0.0),
            measured_s=measured_s,
            window_s=self.plan.window_s,
            stop_reason=self.stop_reason,
            scheduled=self.scheduled if self.point.loop == "open" else self.sent,
            sent=self.sent,
            ok=self.ok,
            errors={outcome_kind(code): count for code, count in sorted(self.errors.items())},
            late_sends=self.late,
            capped_sends=self.capped,
            warmup_requests=self.warmup_requests,
            corrected=stats.encode(self.latency.total_corrected),
            uncorrected=stats.encode(self.latency.total_uncorrected),
            windows=self.latency.windows,
            endpoints=[
                EndpointRaw(
                    name=endpoint.name,
                    sent=self.ep_sent[number],
                    ok=self.ep_ok[number],
                    errors={outcome_kind(c): n for c, n in sorted(self.ep_errors[number].items())},
                    latency=self._endpoint_histogram(number),
                    latency_sum_s=self.ep_sum_s[number],
                )
                for number, endpoint in enumerate(self.plan.endpoints)
            ],
            generators=[generator],
        )


def _cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


CSV_HEADER = (
    "point,proc,endpoint,measured,intended_s,written_s,finished_s,latency_ms,service_ms,status,outcome\n"
)


def _prepare_process() -> None:
    """Do the slow one-off work now rather than in the middle of a point.

    The HDR lookup tables take ~100 ms to build, and a full garbage collection over the objects
    that importing pydantic, aiohttp and friends leaves behind takes 50-100 ms; either inside a point
    would stall the loop and make sends late. ``gc.freeze`` moves everything alive now out of the
    collector's view, so later collections only walk what the run itself allocates.
    """
    stats.values_at_percentiles_us(stats.new_histogram(), (99.0,))
    keep_freed_memory()
    gc.collect()
    gc.freeze()


async def run_points(plan: GeneratorPlan, hooks: Hooks) -> list[PointRaw]:
    """Run every point of ``plan`` in order on the running event loop."""
    run_start = _now()
    results = []
    csv: TextIO | None = None
    try:
        if plan.requests_csv is not None:
            csv = open(plan.requests_csv, "w", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
            csv.write(CSV_HEADER)
        for point in plan.points:
            results.append(await _PointRun(plan, point, hooks, csv, run_start).run())
    finally:
        if csv is not None:
            csv.close()
    return results


def run_generator(
    plan: GeneratorPlan, hooks: Hooks, ready: Callable[[], None] | None = None
) -> list[PointRaw]:
    """Run ``plan`` on a fresh event loop (uvloop when installed) in this thread.

    ``ready`` is called once the process is prepared and just before the first point starts; several
    generator processes wait on a barrier there so that they start together.
    """
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        loop_factory = asyncio.new_event_loop
    _prepare_process()
    try:
        if ready is not None:
            ready()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(run_points(plan, hooks))
    finally:
        gc.unfreeze()


_RETRY_AFTER_S = re.compile(rb'"retry_after_s"\s*:\s*([0-9.eE+-]+)')


def retry_wait_s(response: Response, max_wait_s: float) -> float:
    """What a 503 asks a client to wait, at most `max_wait_s`: the body's `retry_after_s` (modelfleet's
    precise figure; a regular expression, not a JSON parse, on the generator's hot path), else the
    `Retry-After` header's seconds; 0 when it asks nothing."""
    match = _RETRY_AFTER_S.search(response.body, 0, 4096)
    text = match[1] if match is not None else response.header(b"retry-after")
    if text is None:
        return 0.0
    try:
        wait_s = float(text)
    except ValueError:  # an HTTP date: a client of this generator does not wait for a calendar
        return 0.0
    return min(max(wait_s, 0.0), max_wait_s) if math.isfinite(wait_s) else 0.0
