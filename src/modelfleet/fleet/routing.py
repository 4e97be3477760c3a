"""The router's pure parts: the routing table (least outstanding requests under a per-replica limit and
a per-model window learnt from the replica's refusals, skipping replicas that refused a model as
overloaded for as long as they asked), the retry budget, and quantiles from buckets.

No sockets and no event loop here, so the choice of replica is tested in process.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

from modelfleet.fleet.router_config import Upstream

# The adaptive window (AIMD, as TCP's congestion window): a replica's overload refusal of a model cuts its
# window to this share of the requests of it in flight there, at most once per window's worth of sends
# (one round trip of traffic: the refusals of one burst cut it once, not once each); every other answer
# grows it by 1/window (one request per round trip). Tried on the chaos fleet at 3x capacity: cutting
# by one request instead (additive decrease) took seconds to come down after the window had grown past
# what the replicas admit, and admitted p99 swung between 40 and 240 ms from one second to the next.
# A window not cut for WINDOW_FORGET_S is dropped: the load that taught it has gone, and a stale window
# must not refuse the next burst.
WINDOW_CUT = 0.8
WINDOW_MIN = 1.0
WINDOW_FORGET_S = 2.0
# A replica that came back (not ready, then ready) counts as recovering for this long: its model is still
# degraded (router_wait.py), since the restarted replica starts cold and the others carry a backlog from
# the seconds it was down. Without it the waits ended the moment it was ready, and its first refusals
# went to the clients (chaos, kill -9 of one of two replicas at half load: 23-79 503s per run, all in
# the 0.5 s after it was ready again).
RECOVERING_S = 2.0


class Replica:
    """One upstream as the router sees it: readiness from health polls, requests in flight and their limit."""

    __slots__ = (
        "back_at",
        "group",
        "held_until",
        "in_flight",
        "limit",
        "models",
        "name",
        "outstanding",
        "polled_down",
        "ready",
        "unloaded",
        "url",
        "was_ready",
        "windows",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.name = upstream.name
        self.group = upstream.group
        self.url = upstream.url.rstrip("/")
        self.models = tuple(upstream.models)
        self.limit = upstream.max_in_flight
        self.outstanding = 0
        # Unknown until the first poll; starting "not ready" means a client never hits a cold server.
        self.ready = False
        self.was_ready = False
        self.polled_down = False  # a health poll found it not ready, after it had been ready
        self.back_at = -math.inf  # when it last came back: ready, then not, then ready again
        # Model → monotonic time until which this replica is not sent that model (it answered 503 with a
        # retry_after_s); empty while nothing is held, so the hot path pays one falsy check.
        self.held_until: dict[str, float] = {}
        # Models this replica serves but reported not loaded (lazy, under a memory budget) in its last
        # repository index; empty for a replica that loads everything, so the hot path pays one falsy check.
        self.unloaded: set[str] = set()
        # Model → requests of it in flight here, and model → its adaptive window (absent: only `limit`).
        self.in_flight: dict[str, int] = {}
        self.windows: dict[str, Window] = {}

    def set_ready(self, ready: bool, now: float, polled: bool = False) -> None:
        """A health poll's verdict (``polled``), or a failed connection's (not ready until the next poll).

        A replica comes back when a poll finds it ready after a poll found it not ready, having been ready
        before: it starts each of its models at a window of 1 in slow start (see Window), and its models
        count as degraded for RECOVERING_S. A failed connection alone is no restart: one stale keep-alive
        connection would otherwise turn the next overload burst into waits (the review's overload drill
        then saw 100 of 100 answered, no 503).
        """
        if polled and not ready and self.was_ready:
            self.polled_down = True
        elif ready:
            if self.polled_down:
                self.back_at = now
                for model in self.models:
                    window = self.windows[model] = Window(WINDOW_MIN, slow_start=True)
                    window.cut_at = now
            self.polled_down = False
            self.was_ready = True
        self.ready = ready

    def sent(self, model: str) -> None:
        self.outstanding += 1
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        if self.windows and (window := self.windows.get(model)) is not None:
            window.sends += 1

    def finished(self, model: str, refused: bool, now: float) -> None:
        """One request of ``model`` answered; ``refused``: by the replica's admission control (a 503 with
        retry_after_s), which cuts the model's window here, where any other answer grows it."""
        self.outstanding -= 1
        in_flight = self.in_flight[model]
        self.in_flight[model] = in_flight - 1
        window = self.windows.get(model) if self.windows else None
        if refused:
            if window is None:
                window = self.windows[model] = Window(float(max(in_flight, 1)))
            elif window.sends < window.size:
                return  # a refusal from the round trip already cut for
            window.size = max(WINDOW_MIN, min(window.size, float(in_flight)) * WINDOW_CUT)
            window.sends = 0
            window.cut_at = now
            window.slow_start = False
        elif window is not None:
            window.size += 1.0 if window.slow_start else 1.0 / window.size
            if window.size >= self.limit:
                del self.windows[model]

    def window_full(self, model: str, now: float) -> bool:
        """Whether ``model``'s requests in flight here fill its window (a forgotten window is dropped)."""
        window = self.windows.get(model)
        if window is None:
            return False
        if now - window.cut_at > WINDOW_FORGET_S:
            del self.windows[model]
            return False
        return self.in_flight.get(model, 0) >= window.size

    def note_index(self, entries: object) -> None:
        """Learn from the replica's repository index which of its models are not loaded now."""
        if not isinstance(entries, list):
            return
        self.unloaded = {
            str(entry["name"])
            for entry in entries
            if isinstance(entry, dict)
            and entry.get("state") == "UNAVAILABLE"
            and str(entry.get("reason", "")).startswith("not loaded")
        }

    def held(self, model: str, now: float) -> bool:
        until = self.held_until.get(model)
        if until is None:
            return False
        if until <= now:
            del self.held_until[model]
            return False
        return True


class Window:
    """One model's adaptive in-flight window on one replica (see WINDOW_CUT).

    ``slow_start`` (TCP's): a replica that came back starts its models at one request in flight, and each
    answer adds one (the window doubles every round trip) until its first refusal or its limit. A
    restarted replica runs cold, and sent its full limit at once it refused most of it: with the retries
    of those refusals the router spent its retry budget (chaos, kill -9 of one of two replicas at half
    load: 424 retries, 30 requests lost in the second after the replica was back).
    """

    __slots__ = ("cut_at", "sends", "size", "slow_start")

    def __init__(self, size: float, slow_start: bool = False) -> None:
        self.size = size
        self.sends = 0
        self.cut_at = 0.0
        self.slow_start = slow_start


class RoutingTable:
    """Model name → replicas serving it; picks the ready replica with the fewest requests in flight.

    A replica with ``limit`` requests in flight is saturated and skipped, and so is one whose requests of
    the model fill its adaptive window (learnt from the replica's refusals of it) or one holding the model
    (``hold``: it refused the model as overloaded and asked for a retry after a while): when every ready
    replica is one of these, ``choose`` returns None and the router sheds at once (503) instead of
    queueing in front of them or forwarding requests a replica would refuse.

    Measured on the chaos fleet (2 MiniLM replicas, 3x capacity): without windows the replicas refused
    76 % of the 503s themselves, each after reading and decoding the request on a busy event loop (503
    p99 21 ms, and CPU taken from inference); the windows move those refusals to the router.
    """

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.replicas = [Replica(upstream) for upstream in upstreams]
        self.by_model: dict[str, list[Replica]] = {}
        for replica in self.replicas:
            for model in replica.models:
                self.by_model.setdefault(model, []).append(replica)
        # Rotating start index: among equally loaded replicas the choice goes round, not always to the first.
        self._turn = 0

    def has_model(self, model: str) -> bool:
        return model in self.by_model

    def choose(self, model: str, exclude: Replica | None = None, now: float = 0.0) -> Replica | None:
        """The replica to send ``model`` to at monotonic time ``now`` (holds end by it), or None.

        A replica that has the model loaded wins over one that would load it first, whatever their
        requests in flight; the one chosen is taken to have it loaded from then on (it loads it)."""
        candidates = self.by_model.get(model)
        if not candidates:
            return None
        count = len(candidates)
        self._turn = (self._turn + 1) % count
        best: Replica | None = None
        for offset in range(count):
            replica = candidates[(self._turn + offset) % count]
            if not replica.ready or replica is exclude or replica.outstanding >= replica.limit:
                continue
            if replica.held_until and replica.held(model, now):
                continue
            if replica.windows and replica.window_full(model, now):
                continue
            if best is None or _better(replica, best, model):
                best = replica
                if best.outstanding == 0 and not (best.unloaded and model in best.unloaded):
                    break
        if best is not None and best.unloaded:
            best.unloaded.discard(model)
        return best

    @staticmethod
    def hold(replica: Replica, model: str, until: float) -> None:
        """Send ``replica`` no ``model`` request before monotonic time ``until``."""
        replica.held_until[model] = until

    def hold_left_s(self, model: str, now: float) -> float | None:
        """Seconds until the first held ready replica of ``model`` takes it again; None if none is held."""
        left = [
            replica.held_until[model] - now
            for replica in self.by_model.get(model, ())
            if replica.ready and replica.held(model, now)
        ]
        return min(left) if left else None

    def windowed(self, model: str) -> bool:
        """Whether a ready replica of ``model`` has an adaptive window for it (it refused it lately)."""
        return any(replica.ready and model in replica.windows for replica in self.by_model.get(model, ()))

    def degraded(self, model: str, now: float) -> bool:
        """Whether ``model`` has a replica down (another one ready) or one back for under RECOVERING_S
        (its first readiness at start is no coming back)."""
        replicas = self.by_model.get(model, ())
        ready = 0
        recovering = False
        for replica in replicas:  # no allocation: every request the router cannot place asks this
            if replica.ready:
                ready += 1
                recovering = recovering or now - replica.back_at < RECOVERING_S
        return ready > 0 and (ready < len(replicas) or recovering)

    def ready_replicas(self, model: str) -> int:
        return sum(1 for replica in self.by_model.get(model, ()) if replica.ready)

    def fleet_ready(self) -> bool:
        """Ready when every model has at least one ready replica."""
        return all(any(replica.ready for replica in replicas) for replicas in self.by_model.values())

    def not_ready_models(self) -> list[str]:
        return [model for model, replicas in self.by_model.items() if not any(r.ready for r in replicas)]


def _better(replica: Replica, best: Replica, model: str) -> bool:
    """Loaded before not loaded, then fewer requests in flight."""
    cold = bool(replica.unloaded) and model in replica.unloaded
    best_cold = bool(best.unloaded) and model in best.unloaded
    if cold != best_cold:
        return best_cold
    return replica.outstanding < best.outstanding


def window_refusal(model: str, after: str = "") -> str:
    """The router's own 503 while every ready replica's window for ``model`` is full (HTTP and gRPC)."""
    return (
        f"model {model!r} is overloaded: every ready replica has as many of its requests in flight as "
        f"it admitted before refusing more (the router's adaptive window){after}; retry shortly"
    )


class RetryBudget:
    """Retries allowed over a sliding window: ``percent`` of the requests plus ``min_per_s`` (Finagle's
    RetryBudget: 20 % and 10/s over 10 s; Envoy's retry budget likewise defaults to 20 %).

    Without a budget a failing replica turns each request into two and an overload into a storm; with
    it, retries add at most ``percent`` to the load however much fails. The window is ``slots`` counters
    rotated by ``tick()`` (the router calls it every ``window_s / slots``), so recording a request is one
    increment (``requests += 1``) on the hot path.
    """

    __slots__ = ("_ratio", "_reserve", "_retries", "_slot_requests", "_slot_retries", "requests")

    def __init__(self, percent: float, min_per_s: float, window_s: float = 10.0, slots: int = 10) -> None:
        self._ratio = percent / 100.0
        self._reserve = min_per_s * window_s
        self._slot_requests: deque[int] = deque([0] * (slots - 1), maxlen=slots - 1)
        self._slot_retries: deque[int] = deque([0] * (slots - 1), maxlen=slots - 1)
        self.requests = 0  # this slot's requests, counted by the caller
        self._retries = 0  # this slot's retries

    def tick(self) -> None:
        """Start a new slot; the oldest falls out of the window."""
        self._slot_requests.append(self.requests)
        self._slot_retries.append(self._retries)
        self.requests = self._retries = 0

    def can_retry(self) -> bool:
        """Whether the window has budget left for one more retry (nothing is spent)."""
        requests = self.requests + sum(self._slot_requests)
        retries = self._retries + sum(self._slot_retries)
        return retries + 1 <= self._ratio * requests + self._reserve

    def try_retry(self) -> bool:
        """Spend one retry if the window has budget left."""
        if not self.can_retry():
            return False
        self._retries += 1
        return True


def quantile_from_buckets(
    quantile: float, bounds: Sequence[float], cumulative_counts: Sequence[float]
) -> float | None:
    """Estimate a quantile from a cumulative histogram, interpolating linearly inside the bucket.

    The same estimate Prometheus' ``histogram_quantile`` gives, so `fleet status` and dashboards agree.
    ``bounds`` are upper bounds ending with +Inf; returns None without observations.
    """
    if not cumulative_counts or cumulative_counts[-1] <= 0:
        return None
    total = cumulative_counts[-1]
    rank = quantile * total
    lower_bound = 0.0
    lower_count = 0.0
    for bound, count in zip(bounds, cumulative_counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the largest finite bucket: report its bound, as Prometheus does
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, count
    return lower_bound
