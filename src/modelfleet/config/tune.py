"""The tune spec: which artifacts and settings to try, on which hardware, against which SLO and price table.

`modelfleet tune` measures each configuration's capacity under the SLO on real servers and prices it;
docs/tune.md documents every field. Paths are relative to the spec file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from modelfleet.config.base import SpecModel

Purchase = Literal["on_demand", "spot", "reserved"]
Strategy = Literal["auto", "exhaustive", "optuna"]


class HardwareSpec(SpecModel):
    """One local "hardware": a CPU set and a memory limit on this machine, priced as an instance type."""

    cpus: int = Field(default=1, ge=1, le=1024, description="CPUs in the server's CPU set.")
    cpu_list: list[int] = Field(
        default_factory=list,
        description="Exact CPU ids for the set; default: the first `cpus` CPUs this process may use.",
    )
    memory_mib: int | None = Field(
        default=None,
        ge=128,
        description="Memory of the hardware in MiB: picks the instance type; enforced only where a cgroup "
        "is writable (the output says whether it was).",
    )
    instance_type: str | None = Field(
        default=None,
        description="Price this hardware as this instance type; default: the cheapest type in "
        "`prices.families` with at least `cpus` vCPUs and `memory_mib` memory.",
    )

    @model_validator(mode="after")
    def _list_matches(self) -> HardwareSpec:
        if self.cpu_list and len(set(self.cpu_list)) != self.cpus:
            raise ValueError(f"cpu_list names {len(set(self.cpu_list))} CPUs but cpus is {self.cpus}")
        return self

    @property
    def label(self) -> str:
        memory = f"/{self.memory_mib}MiB" if self.memory_mib else ""
        return f"{self.cpus}cpu{memory}"


class SearchSpace(SpecModel):
    """The server settings to try; every combination is one configuration."""

    max_batch_size: list[int] = Field(
        default_factory=lambda: [1, 8, 32], min_length=1, description="batching.max_batch_size values."
    )
    max_delay_s: list[float] = Field(
        default_factory=lambda: [0.002], min_length=1, description="batching.max_delay_s values in seconds."
    )
    workers: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="server.workers values (processes)."
    )
    intra_op_threads: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="ONNX Runtime threads per run; 0 lets the server pick (cores ÷ workers).",
    )
    instances: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="Model runs that may execute at once per process.",
    )
    length_grouping: list[bool] = Field(
        default_factory=lambda: [True],
        min_length=1,
        description="Text models: split batches into runs of similar length (true) or pad each batch "
        "whole into one run (false); [true, false] compares both.",
    )

    def size(self) -> int:
        return (
            len(self.max_batch_size)
            * len(self.max_delay_s)
            * len(self.workers)
            * len(self.intra_op_threads)
            * len(self.instances)
            * len(self.length_grouping)
        )


class CapacitySpec(SpecModel):
    """How one configuration's capacity under the SLO is measured: open loop, doubling, then bisection."""

    start_rate_per_s: float = Field(default=50.0, gt=0, description="First rate tried, per second.")
    min_rate_per_s: float = Field(
        default=5.0, gt=0, description="Below this rate a configuration counts as meeting the SLO at no rate."
    )
    max_rate_per_s: float = Field(
        default=20_000.0,
        gt=0,
        description="Doubling stops here; a configuration passing at it has capacity 'at least' this.",
    )
    resolution: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Bisection stops when (failing - passing) ÷ failing rate is at most this.",
    )
    max_probes: int = Field(default=12, ge=1, le=100, description="Most load points per capacity search.")
    probe_duration_s: float = Field(default=3.0, gt=0, description="Measured seconds per load point.")
    warmup_s: float = Field(default=1.0, ge=0, description="Unmeasured seconds before each load point.")
    repeats: int = Field(
        default=2, ge=1, le=20, description="Capacity searches per configuration; their spread is reported."
    )
    arrival: Literal["constant", "poisson"] = Field(
        default="poisson", description="Open loop arrival process of the probes."
    )
    late_send_threshold_s: float = Field(
        default=0.002,
        gt=0,
        description="A send this much later than its intended time is late (bench's late_send_threshold_s).",
    )
    max_late_fraction: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A probe with more late sends than this share is invalid (the generator fell behind) "
        "and never counts as a pass.",
    )
    require_stable: bool = Field(
        default=True,
        description="A probe passes only when its stability windows agree (throughput and p99 within 10 %); "
        "judged only when a window holds at least 1,000 responses.",
    )
    window_s: float = Field(default=1.0, gt=0, description="Stability window length in seconds.")

    @model_validator(mode="after")
    def _ordered(self) -> CapacitySpec:
        if not self.min_rate_per_s <= self.start_rate_per_s <= self.max_rate_per_s:
            raise ValueError("need min_rate_per_s <= start_rate_per_s <= max_rate_per_s")
        return self


class PriceSpec(SpecModel):
    """Which price table prices the hardware, with the user's corrections."""

    table: Path | None = Field(
        default=None,
        description="Price table YAML; default: the shipped table (modelfleet/tune/prices/aws-2026-12.yaml).",
    )
    extra_files: list[Path] = Field(
        default_factory=list,
        description="More price tables; their instance types add to or replace the table's.",
    )
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Instance type → on-demand $ per hour, replacing the table's figure.",
    )
    purchase: Purchase = Field(
        default="on_demand", description="on_demand, spot or reserved (the table's factor times on-demand)."
    )
    families: list[str] = Field(
        default_factory=list,
        description="Instance families a CPU set may map to (e.g. c7i, m7i); default: every family of this "
        "machine's architecture without accelerators.",
    )

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "table", "extra_files")

    @field_validator("overrides")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, price in value.items() if price <= 0]
        if bad:
            raise ValueError(f"override prices must be above 0 $/h: {', '.join(bad)}")
        return value


class TuneSpec(SpecModel):
    """What `modelfleet tune` searches and how it judges and prices each configuration."""

    artifacts: list[Path] = Field(
        min_length=1,
        description="Artifact folders to try, e.g. the fp32 and the int8 build of one model; byte-identical "
        "ones (same content hash) are measured once.",
    )
    model_name: str | None = Field(
        default=None, description="Name of the model in the fleet spec written; default: the artifact's name."
    )
    slo: str = Field(
        default="p99<100ms,error_rate<1%",
        description="SLO gates (bench syntax); needs a latency upper bound, which also sets goodput.",
    )
    target_rate_per_s: float = Field(gt=0, description="Peak requests per second the fleet must serve.")
    headroom: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="Share of a replica's measured capacity it runs at under the target rate.",
    )
    hardware: list[HardwareSpec] = Field(
        default_factory=lambda: [HardwareSpec()], min_length=1, description="CPU sets to try."
    )
    space: SearchSpace = Field(default_factory=SearchSpace, description="Server settings to try.")
    capacity: CapacitySpec = Field(default_factory=CapacitySpec, description="How capacity is measured.")
    prices: PriceSpec = Field(default_factory=PriceSpec, description="Price table and corrections.")
    strategy: Strategy = Field(
        default="auto",
        description="exhaustive: every configuration; optuna: a seeded TPE search; auto: exhaustive when "
        "the space fits in max_trials.",
    )
    max_trials: int = Field(default=50, ge=1, le=10_000, description="Most configurations measured.")
    max_time_s: float = Field(
        default=3600.0, gt=0, description="No new trial starts after this many seconds."
    )
    early_stop_trials: int = Field(
        default=10,
        ge=1,
        description="optuna: stop after this many trials in a row without a cheaper configuration.",
    )
    seed: int = Field(default=0, description="Seed of the optimiser and of the load's arrivals.")
    verify: bool = Field(
        default=True, description="Rerun the winner on a fresh server at its per-replica target rate."
    )
    verify_tolerance: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="Re-verification fails when measured goodput or p99 differ from the prediction by more.",
    )
    verify_floor_ms: float = Field(
        default=1.0,
        ge=0,
        description="p99 differences below this many ms pass re-verification whatever the ratio (timer "
        "resolution is 1 ms).",
    )
    server_start_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest a trial's server may take to become ready."
    )
    fleet_name: str = Field(default="tuned", description="Name of the fleet spec --write-fleet writes.")

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "artifacts")
        self.prices.resolve_paths(base)
