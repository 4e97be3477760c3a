"""Residency: how many models one server keeps loaded, and how it loads the others on demand."""

from __future__ import annotations

from pydantic import Field

from modelfleet.config.base import SpecModel


class ResidencyConfig(SpecModel):
    """A memory budget for loaded models; without one every model loads at start and stays loaded."""

    memory_budget_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Resident memory the server's models may take, all worker processes together (each "
        "gets an equal share), measured per loaded artifact (RSS growth over its load). Set, models not in `pinned` load on their first request and the least "
        "valuable are unloaded to stay within it. Unset: every model loads at start and stays loaded.",
    )
    pinned: list[str] = Field(
        default_factory=list,
        description="Served names loaded at start and never unloaded for the budget (with a budget set).",
    )
    max_concurrent_loads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Cold loads that may run at once; one at a time keeps each load's measured size clean.",
    )
    max_cold_requests: int = Field(
        default=256,
        ge=1,
        description="Requests that may wait for a model to load, all models together; beyond this a "
        "request for a model that is not loaded gets 503 with Retry-After.",
    )
    demand_half_life_s: float = Field(
        default=60.0,
        gt=0,
        description="Half-life of a model's recent demand (decayed request count) in the eviction "
        "policy: it unloads the lowest demand × reload seconds ÷ measured bytes first.",
    )

    def per_worker(self, workers: int) -> ResidencyConfig:
        """This config with the budget divided among `workers` processes: each loads its own models."""
        if self.memory_budget_bytes is None or workers <= 1:
            return self
        return self.model_copy(update={"memory_budget_bytes": max(1, self.memory_budget_bytes // workers)})

    @property
    def lazy(self) -> bool:
        """True when models load on demand (a budget is set)."""
        return self.memory_budget_bytes is not None
