"""Intended send times of an open loop: constant or Poisson arrivals, with an optional linear ramp.

The rate may ramp linearly from ``from_rate`` to ``rate`` over ``ramp_s`` and then stay. Arrivals are
placed by inverting the cumulative arrival count Λ(t): the k-th constant arrival is at Λ⁻¹(k + phase),
the k-th Poisson arrival at Λ⁻¹(E₁ + … + E_k) with Eᵢ ~ Exp(1) (time rescaling), so both processes
follow the ramp exactly and never depend on when the previous request finished.
"""

from __future__ import annotations

import math
import random


class ArrivalSchedule:
    """Seconds from the point's start at which each request is due."""

    def __init__(
        self,
        rate_per_s: float,
        poisson: bool,
        rng: random.Random,
        ramp_s: float = 0.0,
        from_rate_per_s: float = 0.0,
        phase: float = 0.0,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self._rate = rate_per_s
        self._ramp_s = ramp_s
        self._from = max(from_rate_per_s, 0.0) if ramp_s > 0 else rate_per_s
        self._curve = (rate_per_s - self._from) / (2.0 * ramp_s) if ramp_s > 0 else 0.0
        self._ramp_arrivals = (self._from + rate_per_s) * ramp_s / 2.0
        self._poisson = poisson
        self._rng = rng
        self._count = phase  # cumulative expected arrivals of the next send

    def _inverse(self, arrivals: float) -> float:
        if arrivals <= self._ramp_arrivals and self._ramp_s > 0:
            # Solve curve·t² + from·t = arrivals in the form that stays exact when curve or from is 0.
            root = math.sqrt(self._from * self._from + 4.0 * self._curve * arrivals)
            denominator = self._from + root
            return 2.0 * arrivals / denominator if denominator > 0 else 0.0
        return self._ramp_s + (arrivals - self._ramp_arrivals) / self._rate

    def next(self) -> float:
        if self._poisson:
            self._count += self._rng.expovariate(1.0)
            return self._inverse(self._count)
        due = self._inverse(self._count)
        self._count += 1.0
        return due
