"""`run_tune(spec)`: hardware × configurations × capacity under the SLO → priced, ranked, re-verified results.

The three loops: each hardware (a CPU set priced as an instance type), each configuration a strategy
proposes, and inside a trial the capacity search. The results file is written after every trial,
so a stopped search resumes (`resume=True`) where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from modelfleet import __version__
from modelfleet.bench.merge import utc_now_iso
from modelfleet.bench.runner import machine_info
from modelfleet.bench.slo import Gate, goodput_limit_ms, parse_slo
from modelfleet.config.tune import TuneSpec
from modelfleet.errors import Conflict, InvalidInput, ModelfleetError
from modelfleet.tune.capacity import CapacityPolicy, Probe, closest_probe, repeat_capacity
from modelfleet.tune.prices import load_prices, map_hardware
from modelfleet.tune.ranking import price_trial, recommend
from modelfleet.tune.results import (
    HardwareRecord,
    TrialRecord,
    TuneResult,
    read_result,
    write_result,
)
from modelfleet.tune.space import Candidate, all_candidates, artifact_variants
from modelfleet.tune.strategy import choose
from modelfleet.tune.trial import cpu_set, generator_beside, measure, memory_limit_support, run_server
from modelfleet.tune.verify import verify_winner


@dataclass(frozen=True, slots=True)
class TuneProgress:
    trials_done: int
    trials_planned: int
    current: str
    best: str
    time_left_s: float


ProgressCallback = Callable[[TuneProgress], None]


def spec_hash(spec: TuneSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def slo_gates(spec: TuneSpec) -> list[Gate]:
    gates = parse_slo(spec.slo)
    if goodput_limit_ms(gates) is None:
        raise InvalidInput(
            f"slo {spec.slo!r} has no latency upper bound (e.g. p99<100ms): tune prices goodput, the "
            "responses within it"
        )
    return gates


def hardware_records(spec: TuneSpec) -> list[HardwareRecord]:
    prices = load_prices(spec.prices)
    cgroup = memory_limit_support()
    records = []
    for index, hardware in enumerate(spec.hardware):
        where = f"hardware.{index}"
        mapping = map_hardware(hardware, prices, spec.prices.families, where)
        cpus = cpu_set(hardware.cpus, hardware.cpu_list, where)
        if hardware.memory_mib is None:
            limit = "none set"
        else:
            limit = "enforced (cgroup v2)" if cgroup is None else f"not enforced: {cgroup}"
        records.append(
            HardwareRecord(
                index=index,
                label=hardware.label,
                cpus=cpus,
                memory_mib=hardware.memory_mib,
                instance_type=mapping.instance_type,
                instance_vcpu=mapping.instance.vcpu,
                instance_memory_mib=mapping.instance.memory_mib,
                instance_price_per_h=prices.price_per_h(mapping.instance_type),
                mapping=mapping.how,
                memory_limit=limit,
            )
        )
    return records


def run_trial(
    candidate: Candidate, hardware: HardwareRecord, spec: TuneSpec, gates: list[Gate], index: int
) -> TrialRecord:
    """Start the server, search its capacity (with repeats), measure it at its per-replica target, price it."""
    started = time.monotonic()
    capacity = spec.capacity
    policy = CapacityPolicy(
        capacity.start_rate_per_s,
        capacity.min_rate_per_s,
        capacity.max_rate_per_s,
        capacity.resolution,
        capacity.max_probes,
    )
    base = {
        "key": candidate.key,
        "index": index,
        "artifact": str(candidate.variant.path),
        "model_name": candidate.variant.name,
        "precision": candidate.variant.precision,
        "content_hash": candidate.variant.content_hash,
        "hardware": candidate.hardware_index,
        "settings": asdict(candidate.settings),
        "label": f"{candidate.variant.precision} {candidate.settings.label()} on {hardware.label}",
    }
    peak_mib = 0.0
    with (
        run_server(candidate, hardware.cpus, hardware.memory_mib, spec.server_start_timeout_s) as server,
        generator_beside(hardware.cpus),
    ):

        def probe_at(rate: float) -> Probe:
            nonlocal peak_mib
            result = measure(server, rate, capacity, spec.slo, gates, spec.seed)
            if not result.valid:  # the generator fell behind once: measure again; still invalid never passes
                result = measure(server, rate, capacity, spec.slo, gates, spec.seed + 1)
            peak_mib = max(peak_mib, server.rss_mib())
            return result

        repeated = repeat_capacity(probe_at, policy, capacity.repeats)
        probes = [p for run in repeated.runs for p in run.probes]
        best = repeated.best
        if best is None:
            near = closest_probe(probes)
            note = f"closest: {near.rate_per_s:,.0f}/s, {near.reason}" if near else "no valid probe"
            return TrialRecord(
                **base,
                status="no_capacity",
                error=note,
                probes=list(probes),
                generator_bound=any(r.generator_bound for r in repeated.runs),
                memory_mib=peak_mib,
                duration_s=time.monotonic() - started,
            )
        pricing = price_trial(
            best.goodput_per_s, peak_mib, 0.0, hardware, spec.target_rate_per_s, spec.headroom
        )
        at_target = probe_at(pricing.per_replica_rate_per_s)
        cpu_used = (at_target.cpu_percent or 0.0) / 100.0
        pricing = price_trial(
            best.goodput_per_s, peak_mib, cpu_used, hardware, spec.target_rate_per_s, spec.headroom
        )
    return TrialRecord(
        **base,
        status="ok",
        capacity_per_s=best.goodput_per_s,
        capacity_runs_per_s=[r.best.goodput_per_s if r.best else 0.0 for r in repeated.runs],
        capacity_at_least=any(r.at_max for r in repeated.runs),
        generator_bound=any(r.generator_bound for r in repeated.runs),
        probes=list(probes),
        at_target=at_target,
        per_replica_rate_per_s=pricing.per_replica_rate_per_s,
        memory_mib=peak_mib,
        cpu_percent_at_capacity=best.cpu_percent,
        replicas=pricing.replicas,
        nodes=pricing.nodes,
        fleet_price_per_h=pricing.fleet_price_per_h,
        replica_price_per_h=pricing.replica_price_per_h,
        cost_per_million=pricing.cost_per_million,
        idle_share=pricing.idle_share,
        duration_s=time.monotonic() - started,
    )


def _start(
    spec: TuneSpec,
    output: Path,
    resume: bool,
    hardware: list[HardwareRecord],
    notes: list[str],
    strategy: str,
) -> TuneResult:
    fingerprint = spec_hash(spec)
    if resume and output.is_file():
        previous = read_result(output)
        if previous.spec_hash != fingerprint:
            raise Conflict(
                f"{output} was written for a different tune spec (hash {previous.spec_hash}, this one "
                f"{fingerprint}); resume with the same spec or write to another --output"
            )
        return previous.model_copy(update={"status": "running", "finished_at": None, "verification": None})
    if output.exists() and not resume:
        raise Conflict(f"{output} exists: pass --resume to continue that search, or --force to start over")
    prices = load_prices(spec.prices)
    return TuneResult(
        spec=spec.model_dump(mode="json"),
        spec_hash=fingerprint,
        started_at=utc_now_iso(),
        modelfleet_version=__version__,
        machine=machine_info().model_dump(mode="json"),
        slo=spec.slo,
        target_rate_per_s=spec.target_rate_per_s,
        headroom=spec.headroom,
        strategy=strategy,
        price_table={
            "sources": ", ".join(prices.sources),
            "as_of": prices.table.as_of,
            "region": prices.table.region,
            "purchase": spec.prices.purchase,
        },
        hardware=hardware,
        notes=notes,
    )


def _cost(trial: TrialRecord) -> float:
    return (
        trial.fleet_price_per_h if trial.status == "ok" and trial.fleet_price_per_h is not None else math.inf
    )


def run_tune(
    spec: TuneSpec,
    output: Path,
    resume: bool = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TuneResult:
    """Search, price, rank and re-verify; the results file is written after every trial and at the end.

    Raises `InvalidInput` for a bad spec (unknown instance type, SLO without a latency bound), the
    error a trial's server exited with when every trial failed to load, and `Conflict` for an existing
    results file without ``resume`` or ``force``.
    """
    gates = slo_gates(spec)
    hardware = hardware_records(spec)
    variants, notes = artifact_variants(spec)
    notes = [
        *notes,
        *(f"{h.label} → {h.instance_type} ({h.mapping}); memory limit {h.memory_limit}" for h in hardware),
    ]
    candidates = all_candidates(spec, variants)
    strategy = choose(spec.strategy, candidates, spec.max_trials, spec.seed, spec.early_stop_trials)
    if force:
        output.unlink(missing_ok=True)
    result = _start(spec, output, resume, hardware, notes, strategy.name)
    done = {t.key: t for t in result.trials}
    by_key = {c.key: c for c in candidates}
    for trial in result.trials:
        if trial.key in by_key:
            strategy.tell(by_key[trial.key], _cost(trial))
    started = clock() - result.elapsed_s
    planned = min(len(candidates), spec.max_trials)
    errors: list[ModelfleetError] = []
    while len(result.trials) < spec.max_trials and clock() - started < spec.max_time_s:
        candidate = strategy.propose()
        if candidate is None:
            break
        if candidate.key in done:
            strategy.tell(candidate, _cost(done[candidate.key]))
            continue
        if progress is not None:
            progress(_progress(result, planned, candidate, spec, clock() - started))
        try:
            trial = run_trial(candidate, hardware[candidate.hardware_index], spec, gates, len(result.trials))
        except ModelfleetError as exc:
            errors.append(exc)
            trial = TrialRecord(
                key=candidate.key,
                index=len(result.trials),
                artifact=str(candidate.variant.path),
                model_name=candidate.variant.name,
                precision=candidate.variant.precision,
                content_hash=candidate.variant.content_hash,
                hardware=candidate.hardware_index,
                settings=asdict(candidate.settings),
                label=f"{candidate.variant.precision} {candidate.settings.label()} on {hardware[candidate.hardware_index].label}",
                status="failed",
                error=exc.message,
            )
        result.trials.append(trial)
        done[trial.key] = trial
        strategy.tell(candidate, _cost(trial))
        result.elapsed_s = clock() - started
        write_result(result, output)
    if result.trials and all(t.status == "failed" for t in result.trials) and errors:
        raise errors[0]
    if progress is not None:
        progress(_progress(result, planned, None, spec, clock() - started))
    result.ranking, result.recommendation = recommend(result.trials, hardware, spec.target_rate_per_s)
    if spec.verify and result.recommendation is not None:
        winner = result.trial(result.recommendation.key)
        result.verification = verify_winner(
            by_key[winner.key], winner, hardware[winner.hardware], spec, gates
        )
    result.status = "complete"
    result.finished_at = utc_now_iso()
    result.elapsed_s = clock() - started
    write_result(result, output)
    return result


def _progress(
    result: TuneResult, planned: int, current: Candidate | None, spec: TuneSpec, elapsed_s: float
) -> TuneProgress:
    ok = [t for t in result.trials if t.status == "ok" and t.fleet_price_per_h is not None]
    best = min(ok, key=lambda t: (t.fleet_price_per_h or 0.0, t.cost_per_million or 0.0), default=None)
    return TuneProgress(
        trials_done=len(result.trials),
        trials_planned=planned,
        current=current.settings.label() if current else "done",
        best=f"{best.label}: ${best.fleet_price_per_h:.4f}/h" if best else "none yet",
        time_left_s=max(0.0, spec.max_time_s - elapsed_s),
    )
