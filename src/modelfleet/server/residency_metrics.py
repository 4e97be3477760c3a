"""Prometheus figures of lazy loading and residency: cold-load time, residency age, resident bytes.

Loads and evictions are counted per model in the model rows of `metrics.MODEL_SCHEMA`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from modelfleet.server.metrics import ServerMetrics

# Cold loads run from milliseconds (a scikit-learn model) to tens of seconds (a large transformer).
COLD_LOAD_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# How long an artifact stayed loaded before it was evicted: seconds to hours.
RESIDENCY_AGE_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class ResidencyMetrics:
    """Registered on the server's registry beside its other metrics."""

    def __init__(self, server: ServerMetrics) -> None:
        registry = server.registry
        self.cold_load_s = Histogram(
            "modelfleet_cold_load_duration_seconds",
            "Time from a cold request's load starting to the model serving (open, verify, warm).",
            buckets=COLD_LOAD_BUCKETS_S,
            registry=registry,
        )
        self.residency_age_s = Histogram(
            "modelfleet_residency_age_seconds",
            "How long an evicted artifact had been loaded.",
            buckets=RESIDENCY_AGE_BUCKETS_S,
            registry=registry,
        )
        self.cold_refused = Counter(
            "modelfleet_cold_requests_refused",
            "Requests for a model that was not loaded refused with 503 (residency.max_cold_requests).",
            registry=registry,
        )
        self.cold_abandoned = Counter(
            "modelfleet_cold_loads_abandoned",
            "Cold loads not started because every request waiting for them had given up (deadline, disconnect).",
            registry=registry,
        )
        self.resident_bytes = Gauge(
            "modelfleet_resident_model_bytes",
            "Measured bytes of the artifacts loaded now (one per distinct content, however many names).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.sessions = Gauge(
            "modelfleet_resident_sessions",
            "Open model sessions now: one per distinct artifact content, shared by the names using it.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.budget_bytes = Gauge(
            "modelfleet_memory_budget_bytes",
            "residency.memory_budget_bytes (0: none); with workers each reports its share, summed.",
            multiprocess_mode="livesum",
            registry=registry,
        )
