"""Exact merges: generator processes of one run, and result files of many machines or pods.

Counters add, histograms add (HDR histograms merge without loss), windows merge by their index within
the point, and every derived figure is computed again from the merged raw data. Rates and
concurrencies add too: each part records its own share of the load.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from modelfleet.bench import stats
from modelfleet.bench.results import (
    BenchResult,
    EndpointRaw,
    MachineInfo,
    ModelInfo,
    PointRaw,
    RunInfo,
    WindowRaw,
)
from modelfleet.bench.slo import Gate, parse_slo
from modelfleet.bench.summary import finalize
from modelfleet.errors import InvalidInput


def point_label(loop: str, rate_per_s: float | None, concurrency: int | None) -> str:
    if loop == "open":
        return f"rate {rate_per_s or 0:g}/s"
    return f"concurrency {concurrency or 0}"


def _add_counts(target: dict[str, int], other: dict[str, int]) -> None:
    for kind, count in other.items():
        target[kind] = target.get(kind, 0) + count


def merge_windows(groups: Sequence[Sequence[WindowRaw]]) -> list[WindowRaw]:
    by_index: dict[int, list[WindowRaw]] = {}
    for windows in groups:
        for window in windows:
            by_index.setdefault(window.index, []).append(window)
    merged = []
    for index in sorted(by_index):
        parts = by_index[index]
        corrected = [w.corrected for w in parts if w.corrected]
        uncorrected = [w.uncorrected for w in parts if w.uncorrected]
        merged.append(
            WindowRaw(
                index=index,
                length_s=max(w.length_s for w in parts),
                ok=sum(w.ok for w in parts),
                errors=sum(w.errors for w in parts),
                corrected=stats.merge_encoded_to_text(corrected) if corrected else None,
                uncorrected=stats.merge_encoded_to_text(uncorrected) if uncorrected else None,
            )
        )
    return merged


def merge_endpoints(groups: Sequence[Sequence[EndpointRaw]]) -> list[EndpointRaw]:
    order: list[str] = []
    by_name: dict[str, list[EndpointRaw]] = {}
    for endpoints in groups:
        for endpoint in endpoints:
            if endpoint.name not in by_name:
                order.append(endpoint.name)
            by_name.setdefault(endpoint.name, []).append(endpoint)
    merged = []
    for name in order:
        parts = by_name[name]
        errors: dict[str, int] = {}
        for part in parts:
            _add_counts(errors, part.errors)
        histograms = [p.latency for p in parts if p.latency]
        # A histogram only when every part that had successes kept one, or the merge would be partial.
        complete = all(p.latency or not p.ok for p in parts)
        merged.append(
            EndpointRaw(
                name=name,
                sent=sum(p.sent for p in parts),
                ok=sum(p.ok for p in parts),
                errors=errors,
                latency=stats.merge_encoded_to_text(histograms) if histograms and complete else None,
                latency_sum_s=sum(p.latency_sum_s for p in parts),
            )
        )
    return merged


def merge_point_raws(parts: Sequence[PointRaw]) -> PointRaw:
    first = parts[0]
    for part in parts[1:]:
        if part.index != first.index or part.loop != first.loop:
            raise InvalidInput(
                f"point {part.index} ({part.loop} loop) does not match point {first.index} ({first.loop} loop): "
                "only results of the same plan can be merged"
            )
    errors: dict[str, int] = {}
    for part in parts:
        _add_counts(errors, part.errors)
    rate = sum(p.target_rate_per_s or 0.0 for p in parts) if first.loop == "open" else None
    concurrency = sum(p.concurrency or 0 for p in parts) if first.loop == "closed" else None
    return PointRaw(
        index=first.index,
        label=point_label(first.loop, rate, concurrency),
        loop=first.loop,
        arrival=first.arrival,
        target_rate_per_s=rate,
        concurrency=concurrency,
        started_offset_s=min(p.started_offset_s for p in parts),
        warmup_s=max(p.warmup_s for p in parts),
        send_s=max(p.send_s for p in parts),
        measured_s=max(p.measured_s for p in parts),
        window_s=first.window_s,
        stop_reason=first.stop_reason if all(p.stop_reason == first.stop_reason for p in parts) else "mixed",
        scheduled=sum(p.scheduled for p in parts),
        sent=sum(p.sent for p in parts),
        ok=sum(p.ok for p in parts),
        errors=errors,
        late_sends=sum(p.late_sends for p in parts),
        capped_sends=sum(p.capped_sends for p in parts),
        warmup_requests=sum(p.warmup_requests for p in parts),
        corrected=stats.merge_encoded_to_text(p.corrected for p in parts),
        uncorrected=stats.merge_encoded_to_text(p.uncorrected for p in parts),
        windows=merge_windows([p.windows for p in parts]),
        endpoints=merge_endpoints([p.endpoints for p in parts]),
        generators=[g for p in parts for g in p.generators],
    )


def merge_results(results: Sequence[BenchResult], gates: Sequence[Gate] | None = None) -> BenchResult:
    """Combine result files of generators that ran the same plan at the same time into one result.

    ``gates`` default to the gates of the first result that has any.
    """
    if not results:
        raise InvalidInput("nothing to merge: give at least one results file")
    first = results[0]
    for other in results[1:]:
        if other.settings != first.settings:
            raise InvalidInput(
                f"run {other.run.id} measured with different settings than run {first.run.id} "
                "(window, stability, late-send threshold or timeout); they cannot be merged"
            )
        if other.run.mode != first.run.mode or len(other.points) != len(first.points):
            raise InvalidInput(
                f"run {other.run.id} ({other.run.mode}, {len(other.points)} points) does not match run "
                f"{first.run.id} ({first.run.mode}, {len(first.points)} points)"
            )
    if gates is None:
        gates = parse_slo(next((r.slo.gates for r in results if r.slo is not None), None))
    raw_points = [merge_point_raws([r.points[i] for r in results]) for i in range(len(first.points))]
    points, slo, valid, warnings = finalize(raw_points, first.settings, gates)
    machines: dict[str, MachineInfo] = {}
    models: dict[str, ModelInfo] = {}
    sources: list[str] = []
    for result in results:
        for machine in result.run.machines:
            machines.setdefault(machine.host, machine)
        for model in result.run.models:
            models.setdefault(model.name, model)
        sources.extend(result.run.sources or [result.run.id])
    targets = {r.run.target for r in results}
    run = RunInfo(
        id=uuid.uuid4().hex[:12],
        started_at=min(r.run.started_at for r in results),
        finished_at=max(r.run.finished_at for r in results),
        modelfleet_version=first.run.modelfleet_version,
        target=first.run.target if len(targets) == 1 else f"{len(targets)} targets",
        protocol=first.run.protocol,
        mode=first.run.mode,
        models=list(models.values()),
        config=first.run.config,
        machines=list(machines.values()),
        generators=sum(r.run.generators for r in results),
        sources=sources,
    )
    return BenchResult(
        run=run, settings=first.settings, points=points, slo=slo, valid=valid, warnings=warnings
    )


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
