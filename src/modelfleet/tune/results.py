"""The tune results file (`tune-results.json`): every trial, the ranking, the recommendation, re-verification.

It doubles as the checkpoint: written atomically after every trial with ``status: running``, so
``--resume`` continues from it (refusing a file written for a different spec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fileio import write_atomic
from modelfleet.tune.capacity import Probe

TUNE_KIND: Literal["modelfleet.tune.result"] = "modelfleet.tune.result"
SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# One probe as recorded: the capacity policy's own Probe (a dataclass pydantic validates and dumps as is).
ProbeRecord = Probe


class HardwareRecord(_Model):
    index: int
    label: str
    cpus: list[int]
    memory_mib: int | None
    instance_type: str
    instance_vcpu: int
    instance_memory_mib: int
    instance_price_per_h: float = Field(description="After the purchase factor.")
    mapping: str = Field(description="How the instance type was chosen.")
    memory_limit: str = Field(description="'enforced (cgroup v2)' or why it was not.")


class TrialRecord(_Model):
    """One configuration on one hardware: its capacity under the SLO and what serving the target costs."""

    key: str
    index: int = Field(description="Order in which the trial ran.")
    artifact: str
    model_name: str
    precision: str
    content_hash: str
    hardware: int = Field(description="Index into `hardware`.")
    settings: dict[str, bool | int | float]
    label: str
    status: Literal["ok", "no_capacity", "failed"]
    error: str = ""
    capacity_per_s: float = 0.0
    capacity_runs_per_s: list[float] = Field(default_factory=list)
    capacity_at_least: bool = False
    generator_bound: bool = False
    probes: list[ProbeRecord] = Field(default_factory=list)
    at_target: ProbeRecord | None = Field(default=None, description="Probe at the per-replica target rate.")
    per_replica_rate_per_s: float = 0.0
    memory_mib: float = 0.0
    cpu_percent_at_capacity: float | None = None
    replicas: int = 0
    nodes: int = 0
    fleet_price_per_h: float | None = None
    replica_price_per_h: float | None = None
    cost_per_million: float | None = Field(default=None, description="$ per 1M conforming at capacity.")
    idle_share: float | None = None
    duration_s: float = 0.0


class Verification(_Model):
    key: str
    rate_per_s: float
    predicted_goodput_per_s: float
    measured_goodput_per_s: float
    predicted_p99_ms: float | None
    measured_p99_ms: float | None
    tolerance: float
    floor_ms: float
    passed: bool
    note: str


class Recommendation(_Model):
    key: str
    why: str
    runners_up: list[dict[str, str]] = Field(description="key and why it lost.")


class TuneResult(_Model):
    kind: Literal["modelfleet.tune.result"] = TUNE_KIND
    schema_version: int = SCHEMA_VERSION
    status: Literal["running", "complete"] = "running"
    spec: dict[str, Any]
    spec_hash: str
    started_at: str
    finished_at: str | None = None
    modelfleet_version: str
    machine: dict[str, Any]
    slo: str
    target_rate_per_s: float
    headroom: float
    strategy: str
    price_table: dict[str, str]
    hardware: list[HardwareRecord]
    trials: list[TrialRecord] = Field(default_factory=list)
    ranking: list[str] = Field(default_factory=list, description="Trial keys, best first.")
    recommendation: Recommendation | None = None
    verification: Verification | None = None
    notes: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0

    def trial(self, key: str) -> TrialRecord:
        return next(t for t in self.trials if t.key == key)

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def write_result(result: TuneResult, path: Path) -> None:
    write_atomic(path, result.to_json_bytes())


def is_tune_file(path: Path) -> bool:
    """Whether ``path`` is a tune results file (read only as far as its kind)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"kind": "modelfleet.tune.result"' in head or b'"kind":"modelfleet.tune.result"' in head


def read_result(path: Path) -> TuneResult:
    if not path.is_file():
        raise NotFound(f"tune results file {path} does not exist")
    try:
        return TuneResult.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path} is not a tune results file: {where}: {first['msg']}") from None
