"""The router's request-duration histogram edges: shared by its metrics, the canary windows and the alert rules."""

from __future__ import annotations

from collections.abc import Iterable

# Finer at the low end than a server's buckets: the router's own cost lives below a millisecond.
LATENCY_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


def latency_edges_s(thresholds_s: Iterable[float]) -> tuple[float, ...]:
    """The default edges plus every latency SLO threshold of the fleet.

    A latency alert counts a request as slow at the histogram edge equal to its SLO's threshold; with only the
    default edges a 70 ms SLO would be counted at 50 ms, and its alert would fire on requests that met the SLO.
    """
    return tuple(sorted({*LATENCY_BUCKETS_S, *(round(float(t), 9) for t in thresholds_s)}))
