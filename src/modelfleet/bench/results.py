"""The versioned results file (`BenchResult`): raw, mergeable measurements plus derived summaries.

A result keeps what cannot be re-derived (counters and HDR histograms, encoded) next to what can
(percentiles, throughput, verdicts). Merging adds the raw parts exactly and derives the rest again, so
a merge of N files is the same as one run with all N generators.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fileio import write_atomic

SCHEMA_VERSION = 1
RESULT_KIND = "modelfleet.bench.result"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowRaw(_Model):
    """One stability window of a point: what completed in it, by completion time."""

    index: int = Field(description="Window number from the start of measurement.")
    length_s: float = Field(description="Seconds the window covers (the last one may be shorter).")
    ok: int = Field(default=0, description="Successful (2xx) responses completed in the window.")
    errors: int = Field(default=0, description="Failed requests completed in the window (any kind).")
    corrected: str | None = Field(default=None, description="HDR histogram (µs), latency from intended send.")
    uncorrected: str | None = Field(default=None, description="HDR histogram (µs), latency from actual send.")
    # Derived, recomputed on merge.
    throughput_per_s: float = Field(default=0.0, description="ok ÷ length_s.")
    p50_ms: float | None = Field(default=None, description="Median latency (corrected).")
    p99_ms: float | None = Field(default=None, description="99th percentile latency (corrected).")
    uncorrected_p50_ms: float | None = Field(default=None, description="Median latency from actual send.")
    uncorrected_p99_ms: float | None = Field(default=None, description="99th percentile from actual send.")


class EndpointRaw(_Model):
    """Per model (or plain endpoint) counts, with a histogram when the run tracks few enough endpoints."""

    name: str = Field(description="Model name (V2) or endpoint label (plain HTTP).")
    sent: int = Field(default=0, description="Requests sent during measurement.")
    ok: int = Field(default=0, description="Successful responses.")
    errors: dict[str, int] = Field(
        default_factory=dict, description="Failures by kind, e.g. http_503, timeout."
    )
    latency: str | None = Field(default=None, description="HDR histogram (µs) of corrected latency.")
    latency_sum_s: float = Field(default=0.0, description="Sum of corrected latencies, for the mean.")
    # Derived.
    p50_ms: float | None = Field(default=None, description="Median latency.")
    p99_ms: float | None = Field(default=None, description="99th percentile latency.")
    mean_ms: float | None = Field(default=None, description="Mean latency.")


class GeneratorInfo(_Model):
    """One load-generator process: where it ran and how busy it was."""

    host: str = Field(description="Hostname of the machine or pod.")
    proc: int = Field(description="Process index on that host.")
    cpu_percent: float = Field(description="CPU time ÷ wall time during the point; 100 = one core saturated.")
    max_in_flight_seen: int = Field(default=0, description="Most requests in flight at once.")


class LatencyStats(_Model):
    count: int = Field(description="Samples in the histogram.")
    min_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p99_9_ms: float | None = None
    thin_percentiles: list[str] = Field(default_factory=list, description="Percentiles with too few samples.")

    def get(self, label: str) -> float | None:
        value = getattr(self, f"{label.replace('.', '_')}_ms", None)
        return value if isinstance(value, float | int) else None


class PointSummary(_Model):
    """Figures derived from a point's raw data (recomputed on merge)."""

    throughput_per_s: float = Field(description="Successful responses per second over the measured time.")
    goodput_per_s: float = Field(description="Successful responses within the SLO latency limit, per second.")
    goodput_limit_ms: float | None = Field(
        default=None, description="The latency limit goodput used, if any."
    )
    achieved_send_rate_per_s: float = Field(description="Requests sent per second during the send phase.")
    error_rate: float = Field(description="Failed ÷ completed requests, 0 to 1.")
    late_fraction: float = Field(description="Share of sends that left later than the late-send threshold.")
    latency: LatencyStats = Field(
        description="Latency from the intended send time (open loop) or send (closed)."
    )
    uncorrected_latency: LatencyStats = Field(
        description="Latency from the actual send (hides queueing in the generator)."
    )
    stable: bool | None = Field(description="Last windows agree within tolerance; None when too few windows.")
    stability_note: str
    client_cpu_percent_max: float = Field(description="Busiest generator process's CPU use.")
    valid: bool = Field(description="False when the generator fell behind its schedule.")
    warnings: list[str] = Field(default_factory=list)


class PointRaw(_Model):
    """The mergeable measurements of one load point (one rate or concurrency)."""

    index: int = Field(description="Position of the point in the run.")
    label: str = Field(description="e.g. 'rate 200/s' or 'concurrency 8'.")
    loop: Literal["open", "closed"] = Field(
        description="Open loop (arrival rate) or closed loop (concurrency)."
    )
    arrival: Literal["constant", "poisson", "none"] = Field(description="Arrival process of an open loop.")
    target_rate_per_s: float | None = Field(
        default=None, description="Total intended arrival rate (open loop)."
    )
    concurrency: int | None = Field(default=None, description="Total concurrency (closed loop).")
    started_offset_s: float = Field(description="Seconds from the run start to this point's start.")
    warmup_s: float = Field(description="Ramp plus warm-up time excluded from statistics.")
    send_s: float = Field(description="Length of the measured send phase.")
    measured_s: float = Field(description="From measurement start to the last measured response.")
    window_s: float = Field(description="Length of a stability window.")
    stop_reason: str = Field(description="duration, requests, stable or max_windows.")
    scheduled: int = Field(default=0, description="Sends due in the measured phase.")
    sent: int = Field(default=0, description="Requests sent in the measured phase.")
    ok: int = Field(default=0, description="Successful (2xx) responses to measured requests.")
    errors: dict[str, int] = Field(
        default_factory=dict, description="Failures by kind: http_<status>, timeout, connection."
    )
    late_sends: int = Field(
        default=0, description="Sends later than the late-send threshold (generator fell behind)."
    )
    capped_sends: int = Field(
        default=0, description="Sends that waited for the in-flight cap (target fell behind)."
    )
    warmup_requests: int = Field(
        default=0, description="Requests sent during ramp and warm-up (not measured)."
    )
    corrected: str = Field(description="HDR histogram (µs) of latency from the intended send time.")
    uncorrected: str = Field(description="HDR histogram (µs) of latency from the actual send time.")
    windows: list[WindowRaw] = Field(default_factory=list)
    endpoints: list[EndpointRaw] = Field(default_factory=list)
    generators: list[GeneratorInfo] = Field(default_factory=list)


class PointResult(PointRaw):
    summary: PointSummary | None = Field(default=None, description="Derived figures; recomputed on merge.")


class ModelInfo(_Model):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str | None = None
    weight: float = 1.0


class MachineInfo(_Model):
    host: str
    os: str
    python: str
    cpu_count: int
    cpu_model: str | None = None


class Settings(_Model):
    """Measurement rules every merged file must share."""

    window_s: float
    stability_windows: int
    stability_tolerance: float
    late_send_threshold_s: float
    max_late_fraction: float
    timeout_s: float


class RunInfo(_Model):
    id: str = Field(description="Run id; merged files list theirs in `sources`.")
    started_at: str = Field(description="ISO 8601 UTC.")
    finished_at: str = Field(description="ISO 8601 UTC.")
    modelfleet_version: str
    target: str = Field(description="Base URL (V2) or endpoint URL (plain HTTP).")
    protocol: Literal["v2", "http", "grpc"]
    mode: Literal["seq", "rnd", "closed", "open"]
    models: list[ModelInfo] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict, description="The BenchSpec the run used.")
    machines: list[MachineInfo] = Field(default_factory=list)
    generators: int = Field(description="Generator processes in total.")
    sources: list[str] = Field(default_factory=list, description="Run ids merged into this result.")


class GateVerdict(_Model):
    gate: str = Field(description="The gate as written, e.g. p99<100ms.")
    point: int = Field(description="Point index.")
    value: float | None = Field(description="Measured value in the gate's unit.")
    passed: bool
    note: str = ""


class SloReport(_Model):
    gates: list[str] = Field(description="Gates as written.")
    verdicts: list[GateVerdict] = Field(default_factory=list)
    passed: bool


class BenchResult(_Model):
    schema_version: int = SCHEMA_VERSION
    kind: Literal["modelfleet.bench.result"] = "modelfleet.bench.result"
    run: RunInfo
    settings: Settings
    points: list[PointResult]
    slo: SloReport | None = None
    valid: bool = Field(description="Every point's generator kept its schedule.")
    warnings: list[str] = Field(default_factory=list)

    def to_json_bytes(self, indent: bool = True) -> bytes:
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.model_dump(mode="json"), option=option) + b"\n"


def write_result(result: BenchResult, destination: Path | str) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file; ``-`` writes stdout.

    On stdout the result is one line, so it can be picked out of container logs that mix in other lines.
    """
    if str(destination) == "-":
        sys.stdout.buffer.write(result.to_json_bytes(indent=False))
        sys.stdout.flush()
        return
    write_atomic(destination, result.to_json_bytes())


def read_results(path: Path | str) -> list[BenchResult]:
    """Every result in a file: a results file holds one; a log of several generator pods holds one per line."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"results file {path} does not exist")
    documents = _parse_documents(path.read_bytes())
    if not documents:
        raise InvalidInput(
            f"{path}: no modelfleet bench result found (expected JSON with kind {RESULT_KIND!r})"
        )
    return [_validate(document, path) for document in documents]


def read_result(path: Path | str) -> BenchResult:
    """Read one results file (or a log holding exactly one result line)."""
    results = read_results(path)
    if len(results) > 1:
        raise InvalidInput(
            f"{path} holds {len(results)} results; combine them first with `modelfleet bench merge {path}`"
        )
    return results[0]


def _validate(document: dict[str, Any], path: Path) -> BenchResult:
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidInput(
            f"{path}: results schema version {version!r} is not supported (this tool reads {SCHEMA_VERSION})"
        )
    try:
        return BenchResult.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: not a valid bench result: {where}: {first['msg']}") from None


def _parse_documents(data: bytes) -> list[dict[str, Any]]:
    try:
        document = orjson.loads(data)
        if isinstance(document, dict) and document.get("kind") == RESULT_KIND:
            return [document]
    except orjson.JSONDecodeError:
        pass
    documents = []
    for line in data.splitlines():
        stripped = line.strip()
        if not stripped.startswith(b"{") or RESULT_KIND.encode() not in stripped:
            continue
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            continue
        if isinstance(document, dict) and document.get("kind") == RESULT_KIND:
            documents.append(document)
    return documents
