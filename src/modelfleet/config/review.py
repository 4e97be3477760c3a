"""Settings of `modelfleet review` that belong to a fleet: how old evidence may be, what drills expect.

A fleet spec carries them under `review:` (documented in docs/review.md), so a team states once what
"fresh" and "healed" mean for its fleet and every review, in CI or by hand, judges by the same figures.
"""

from __future__ import annotations

from pydantic import Field

from modelfleet.config.base import SpecModel


class ReviewConfig(SpecModel):
    """What a review of this fleet expects of its evidence and of its drills."""

    protected: bool = Field(
        default=False,
        description="A protected fleet (production): `modelfleet review --drill` refuses to disturb it "
        "unless --force is given.",
    )
    max_result_age_s: float = Field(
        default=30 * 86400.0,
        gt=0,
        description="Oldest saved bench, tune or chaos result (seconds since it was written) a review "
        "accepts as evidence; older results are stale and the question they answer is MEDIUM.",
    )
    max_drift_age_s: float = Field(
        default=86400.0,
        gt=0,
        description="Oldest last drift assessment (seconds) that counts as fresh drift monitoring.",
    )
    max_export_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Oldest registry export (seconds, from the registry's audit log) that counts as a "
        "recent backup for recovering lost models.",
    )
    fast_refusal_ms: float = Field(
        default=50.0,
        gt=0,
        description="Largest p99 latency (ms) of the 503 answers under overload that counts as a fast refusal.",
    )
    heal_within_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds within which a killed replica must be ready again (drill, or chaos results).",
    )
    overload_burst_requests: int = Field(
        default=400,
        ge=10,
        le=20000,
        description="Requests the overload drill sends in all (review.overload_concurrency at a time) to provoke 503s.",
    )
    overload_concurrency: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Requests of the overload drill in flight at once (connections); the rest wait their turn.",
    )
    probe_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Timeout (seconds) of each live probe and drill request.",
    )
