"""What admission measures: each model's run cost (ServiceEstimate) and the event loop's lag (LoopLag).

Split from batching.py, which decides with them; both are O(1) per run or tick and allocate nothing.
"""

from __future__ import annotations

import asyncio
import weakref

# Each run's share of the estimates. 0.25 lets a model that became 10x slower show it within a few runs
# (after 3 runs the estimate is ~5x slower; an overdue run counts at once, see `_in_flight`) while one
# odd run moves the estimate by a quarter at most.
_RUN_WEIGHT = 0.25
# Weight (in items²) of the previous per-item cost in each refit: while recent runs all hold about as many
# items (an unloaded model runs single requests) the slope keeps what earlier, varied runs measured
# instead of collapsing to a guess; runs that vary by a few items outweigh it at once.
_SLOPE_PRIOR_ITEMS2 = 1.0

# How often the event loop's lag is sampled, and how fast a lag spike fades from the figure (per sample).
LOOP_LAG_INTERVAL_S = 0.01
_LOOP_LAG_KEEP = 0.8


class LoopLag:
    """How late this event loop runs what is ready: a timer every 10 ms, the recent peak of its lateness.

    Measured on the chaos fleet (2 cores shared by the load generator, the router and two servers):
    under 3x overload a server's request took ~180 ms inside the server while its queue wait and run took
    ~85 ms; the rest was spent around the batcher (read and decode before admission, encode and send
    after the run), each step waiting for the loop, where the batcher's estimate cannot see it. A request waits for the loop once before admission and
    once for its answer, so admission adds twice this lag to its expected finish: when the loop is the
    bottleneck the excess is refused, which is what frees the loop. One probe per loop, shared by every
    model (100 wake-ups a second in all); the peak decays by a fifth per sample, so a spike fades in ~0.2 s.
    """

    __slots__ = ("_due", "_handle", "_loop", "_users", "lag_s")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.lag_s = 0.0
        self._users = 0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def acquire(self) -> None:
        self._users += 1
        if self._handle is None:
            self._schedule()

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self.lag_s = 0.0

    def _schedule(self) -> None:
        self._due = self._loop.time() + LOOP_LAG_INTERVAL_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        late_s = max(0.0, self._loop.time() - self._due)
        self.lag_s = max(late_s, self.lag_s * _LOOP_LAG_KEEP)
        self._schedule()


_loop_lags: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = weakref.WeakKeyDictionary()


def loop_lag(loop: asyncio.AbstractEventLoop) -> LoopLag:
    """The lag probe of `loop`, created on first use."""
    probe = _loop_lags.get(loop)
    if probe is None:
        probe = _loop_lags[loop] = LoopLag(loop)
    return probe


class ServiceEstimate:
    """What this model's runs cost, measured; O(1) per run, no allocation.

    A run of k items costs about ``fixed_s + per_item_s × k``: measured here for MiniLM fp32 on two
    threads, 2.5 ms + 1.9 ms per item within 5 % from 1 to 32 items, so 16 requests in one run cost 33 ms,
    not 16 × 4.5 ms. The line is an exponentially weighted least-squares fit (weight 0.25 per run) of
    (items, compute seconds): moving means of both, their variance and covariance. A run's weight does not
    depend on its size, so a one-item straggler cannot swing the fit. The first run alone reads as
    proportional (fixed 0: the pessimistic reading for larger batches); the warm-up's runs of 1 and
    ``max_batch_size`` items give the slope before the first client request.

    `solo_s` averages the compute time of runs that held a single request: what a request costs when it
    shares nothing, the unloaded service time that the automatic queue-wait target is a multiple of. It
    is not fed by the larger batches of an overload, so the target cannot grow with the batches it admits.
    """

    __slots__ = (
        "covariance",
        "fixed_s",
        "items",
        "items_variance",
        "per_item_s",
        "runs",
        "seconds",
        "solo_s",
    )

    def __init__(self) -> None:
        self.items = 0.0  # moving mean of items per run
        self.seconds = 0.0  # moving mean of compute seconds per run
        self.items_variance = 0.0
        self.covariance = 0.0
        self.per_item_s = 0.0
        self.fixed_s = 0.0
        self.solo_s = 0.0
        self.runs = 0

    def record(self, items: int, compute_s: float, unshared: bool) -> None:
        compute_s = max(compute_s, 1e-6)
        if self.runs == 0:
            self.items, self.seconds = float(items), compute_s
            self.per_item_s = compute_s / items
        else:
            d_items = items - self.items
            d_seconds = compute_s - self.seconds
            self.items += _RUN_WEIGHT * d_items
            self.seconds += _RUN_WEIGHT * d_seconds
            keep = 1.0 - _RUN_WEIGHT
            self.items_variance = keep * (self.items_variance + _RUN_WEIGHT * d_items * d_items)
            self.covariance = keep * (self.covariance + _RUN_WEIGHT * d_items * d_seconds)
            self.per_item_s = (self.covariance + _SLOPE_PRIOR_ITEMS2 * self.per_item_s) / (
                self.items_variance + _SLOPE_PRIOR_ITEMS2
            )
        # Costs are not negative: a fit outside that reads as proportional, or as flat.
        self.per_item_s = min(max(self.per_item_s, 0.0), self.seconds / self.items)
        self.fixed_s = self.seconds - self.per_item_s * self.items
        if unshared:
            self.solo_s = (
                compute_s if self.solo_s == 0 else self.solo_s + _RUN_WEIGHT * (compute_s - self.solo_s)
            )
        self.runs += 1

    @property
    def known(self) -> bool:
        return self.runs > 0

    def run_cost_s(self, items: int) -> float:
        """Expected compute seconds of one run of `items` items (meaningful once `known`)."""
        return max(1e-6, self.fixed_s + self.per_item_s * items)

    @property
    def items_per_s(self) -> float:
        """Items one instance completes per second at the runs' recent mean size."""
        return self.items / self.seconds

    @property
    def run_s(self) -> float:
        """Compute time of an unshared run, or of a one-item run while no unshared run was seen."""
        return self.solo_s or self.run_cost_s(1)
