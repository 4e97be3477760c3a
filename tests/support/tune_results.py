"""A small, hand-made tune result (no servers) for tests of what reads one: ranking, report, fleet writer."""

from __future__ import annotations

from pathlib import Path

from modelfleet.tune.ranking import price_trial, recommend
from modelfleet.tune.results import HardwareRecord, ProbeRecord, TrialRecord, TuneResult


def hardware(index: int = 0, cpus: int = 1) -> HardwareRecord:
    return HardwareRecord(
        index=index,
        label=f"{cpus}cpu",
        cpus=list(range(cpus)),
        memory_mib=None,
        instance_type="c7i.large",
        instance_vcpu=2,
        instance_memory_mib=4096,
        instance_price_per_h=0.08925,
        mapping="given",
        memory_limit="none set",
    )


def probe(rate: float, p99: float, passed: bool = True) -> ProbeRecord:
    return ProbeRecord(
        rate_per_s=rate,
        passed=passed,
        valid=True,
        goodput_per_s=rate if passed else rate / 2,
        throughput_per_s=rate,
        p50_ms=p99 / 3,
        p99_ms=p99,
        error_rate=0.0,
        late_fraction=0.0,
        reason="" if passed else "p99<20ms (measured 40)",
        latency_ms=p99,
        cpu_percent=60.0,
    )


def trial(
    index: int, batch: int, capacity: float, p99_at_target: float, hw: HardwareRecord, target: float
) -> TrialRecord:
    pricing = price_trial(capacity, 180.0, 0.6, hw, target, 0.7)
    return TrialRecord(
        key=f"k{index}",
        index=index,
        artifact="/artifacts/minilm",
        model_name="minilm",
        precision="fp32",
        content_hash="ab" * 32,
        hardware=hw.index,
        settings={
            "max_batch_size": batch,
            "max_delay_s": 0.002,
            "workers": 1,
            "intra_op_threads": 0,
            "instances": 1,
        },
        label=f"fp32 batch {batch} on {hw.label}",
        status="ok",
        capacity_per_s=capacity,
        capacity_runs_per_s=[capacity, capacity * 1.05],
        probes=[probe(capacity, p99_at_target * 2), probe(capacity * 2, 40.0, passed=False)],
        at_target=probe(pricing.per_replica_rate_per_s, p99_at_target),
        per_replica_rate_per_s=pricing.per_replica_rate_per_s,
        memory_mib=180.0,
        cpu_percent_at_capacity=90.0,
        replicas=pricing.replicas,
        nodes=pricing.nodes,
        fleet_price_per_h=pricing.fleet_price_per_h,
        replica_price_per_h=pricing.replica_price_per_h,
        cost_per_million=pricing.cost_per_million,
        idle_share=pricing.idle_share,
    )


def tune_result(target: float = 1000.0) -> TuneResult:
    hw = hardware()
    trials = [
        trial(0, 1, 200.0, 6.0, hw, target),
        trial(1, 8, 450.0, 9.0, hw, target),
        trial(2, 32, 430.0, 14.0, hw, target),
        TrialRecord(
            key="k3",
            index=3,
            artifact="/artifacts/minilm",
            model_name="minilm",
            precision="fp32",
            content_hash="ab" * 32,
            hardware=0,
            settings={
                "max_batch_size": 64,
                "max_delay_s": 0.002,
                "workers": 1,
                "intra_op_threads": 0,
                "instances": 1,
            },
            label="fp32 batch 64 on 1cpu",
            status="no_capacity",
            error="closest: 5/s, p99<20ms (measured 31)",
            probes=[probe(5, 31.0, passed=False)],
        ),
    ]
    ranking, recommendation = recommend(trials, [hw], target)
    return TuneResult(
        spec={},
        spec_hash="0" * 16,
        started_at="2026-12-01T00:00:00Z",
        modelfleet_version="0.1.0",
        machine={},
        slo="p99<20ms",
        target_rate_per_s=target,
        headroom=0.7,
        strategy="exhaustive",
        price_table={"sources": "aws-2026-12.yaml", "as_of": "2024-06", "purchase": "on_demand"},
        hardware=[hw],
        trials=trials,
        ranking=ranking,
        recommendation=recommendation,
        status="complete",
    )


def write(path: Path, result: TuneResult | None = None) -> Path:
    path.write_bytes((result or tune_result()).to_json_bytes())
    return path
