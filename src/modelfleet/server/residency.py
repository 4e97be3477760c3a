"""Which loaded artifacts to unload when a memory budget is reached: a pure policy, `now` passed in.

An artifact's value is its recent demand × the seconds a reload would cost ÷ the bytes it holds: a
model that is asked for often, is slow to load again, or is small stays; a large, quick-to-reload model
nobody asked for lately goes first. Plain LRU would evict a 1-second MiniLM for a 5-ms iris model that
was touched a moment later. Demand is a request count that halves every `half_life_s`, kept in O(1)
per request (one multiply) as (count, updated at).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


def decayed(count: float, updated_at: float, now: float, half_life_s: float) -> float:
    """`count` as seen at `now`, halved for every `half_life_s` since `updated_at`."""
    return count * float(0.5 ** (max(0.0, now - updated_at) / half_life_s))


@dataclass(slots=True)
class Demand:
    """A decayed request count: `hit` adds one request at `now`."""

    count: float = 0.0
    updated_at: float = 0.0

    def hit(self, now: float, half_life_s: float) -> None:
        self.count = decayed(self.count, self.updated_at, now, half_life_s) + 1.0
        self.updated_at = now

    def at(self, now: float, half_life_s: float) -> float:
        return decayed(self.count, self.updated_at, now, half_life_s)


@dataclass(slots=True)
class Resident:
    """What the policy knows of one loaded artifact (shared by every name that points at it)."""

    key: str
    size_bytes: int  # measured at load
    load_s: float  # measured at load: what unloading it would cost the next request
    demand: Demand = field(default_factory=Demand)
    pinned: bool = False  # a pinned name uses it
    busy: bool = False  # loading, or a name on it has requests in flight


# A request never seen scores above zero, so that a fresh load is not the first thing to go.
_MIN_DEMAND = 1e-3


def value(resident: Resident, now: float, half_life_s: float) -> float:
    """Recent demand × reload seconds ÷ bytes: what keeping one byte of it resident is worth."""
    demand = max(_MIN_DEMAND, resident.demand.at(now, half_life_s))
    return demand * max(resident.load_s, 1e-6) / max(resident.size_bytes, 1)


def choose_evictions(
    residents: Iterable[Resident],
    budget_bytes: int,
    incoming_bytes: int,
    now: float,
    half_life_s: float,
) -> list[str]:
    """The keys to unload, least valuable first, so that the residents left plus `incoming_bytes` fit
    within `budget_bytes`. Pinned and busy residents are never chosen; when they alone exceed the
    budget the list holds every other resident and the caller goes over the budget rather than refuse."""
    present = list(residents)
    used = sum(resident.size_bytes for resident in present) + incoming_bytes
    candidates = sorted(
        (resident for resident in present if not resident.pinned and not resident.busy),
        key=lambda resident: value(resident, now, half_life_s),
    )
    chosen: list[str] = []
    for resident in candidates:
        if used <= budget_bytes:
            break
        chosen.append(resident.key)
        used -= resident.size_bytes
    return chosen
