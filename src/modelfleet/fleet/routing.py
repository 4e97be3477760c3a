"""The router's pure parts: the routing table (least outstanding requests) and quantiles from buckets.

No sockets and no event loop here, so the choice of replica is tested in process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from modelfleet.fleet.router_config import Upstream


class Replica:
    """One upstream as the router sees it: readiness from health polls, requests in flight."""

    __slots__ = ("group", "models", "name", "outstanding", "ready", "url")

    def __init__(self, upstream: Upstream) -> None:
        self.name = upstream.name
        self.group = upstream.group
        self.url = upstream.url.rstrip("/")
        self.models = tuple(upstream.models)
        self.outstanding = 0
        # Unknown until the first poll; starting "not ready" means a client never hits a cold server.
        self.ready = False


class RoutingTable:
    """Model name → replicas serving it; picks the ready replica with the fewest requests in flight."""

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

    def choose(self, model: str, exclude: Replica | None = None) -> Replica | None:
        candidates = self.by_model.get(model)
        if not candidates:
            return None
        count = len(candidates)
        self._turn = (self._turn + 1) % count
        best: Replica | None = None
        for offset in range(count):
            replica = candidates[(self._turn + offset) % count]
            if not replica.ready or replica is exclude:
                continue
            if best is None or replica.outstanding < best.outstanding:
                best = replica
                if best.outstanding == 0:
                    break
        return best

    def ready_replicas(self, model: str) -> int:
        return sum(1 for replica in self.by_model.get(model, ()) if replica.ready)

    def fleet_ready(self) -> bool:
        """Ready when every model has at least one ready replica."""
        return all(any(replica.ready for replica in replicas) for replicas in self.by_model.values())

    def not_ready_models(self) -> list[str]:
        return [model for model, replicas in self.by_model.items() if not any(r.ready for r in replicas)]


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
